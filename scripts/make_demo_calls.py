#!/usr/bin/env python3
"""Make the demo calls in ``demo/calls/`` from ``demo/scenarios.yaml`` with espeak-ng.

Each scenario's caller lines are spoken with its voice and speed, resampled to 8 kHz mono
PCM16 (telephone audio, as Exotel's Stream applet sends it) and joined with silences so a voice
activity detector cuts one utterance per line. The output depends only on the scenario file and
the espeak-ng version (recorded in the scenario file's ``generator`` block), so the WAVs can be
rebuilt at any time::

    apt-get install -y espeak-ng
    .venv/bin/python scripts/make_demo_calls.py            # every scenario
    .venv/bin/python scripts/make_demo_calls.py --only angry-caller
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml
from scipy.signal import resample_poly

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCENARIOS = ROOT / "demo" / "scenarios.yaml"
DEFAULT_OUT = ROOT / "demo" / "calls"
PEAK = 0.7  # normalise every call to the same peak level (espeak voices differ in loudness)


def espeak() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise SystemExit("error: espeak-ng not found (apt-get install -y espeak-ng)")
    return found


def espeak_version() -> str:
    out = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [espeak(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return out.strip()


def speak(text: str, voice: str, speed_wpm: int) -> tuple[np.ndarray, int]:
    """One line of speech as float32 mono samples and its sample rate (espeak: 22,050 Hz)."""
    wav = subprocess.run(  # noqa: S603 - argv list from our own scenario file, no shell
        [espeak(), "-v", voice, "-s", str(speed_wpm), "--stdout", text],
        capture_output=True,
        check=True,
    ).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    return trim(samples), int(rate)


def trim(samples: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Drop espeak's leading/trailing silence so the scenario's pauses are exact."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    if loud.size == 0:
        return samples
    return samples[loud[0] : loud[-1] + 1]


def resample(samples: np.ndarray, rate_from: int, rate_to: int) -> np.ndarray:
    if rate_from == rate_to:
        return samples
    g = gcd(rate_from, rate_to)
    return resample_poly(samples, rate_to // g, rate_from // g).astype(np.float32)


def render(call: dict[str, Any], generator: dict[str, Any], defaults: dict[str, Any]) -> np.ndarray:
    rate = int(generator.get("sample_rate_hz", 8000))
    pause = int(call.get("pause_ms", defaults.get("pause_ms", 1100)))
    parts: list[np.ndarray] = [np.zeros(rate * int(generator.get("lead_silence_ms", 500)) // 1000)]
    for n, line in enumerate(call["lines"]):
        if n:
            parts.append(np.zeros(rate * pause // 1000, dtype=np.float32))
        speech, speech_rate = speak(str(line), str(call["voice"]), int(call["speed_wpm"]))
        parts.append(resample(speech, speech_rate, rate))
    parts.append(np.zeros(rate * int(generator.get("tail_silence_ms", 1500)) // 1000))
    audio = np.concatenate(parts).astype(np.float32)
    peak = float(np.max(np.abs(audio))) or 1.0
    return audio * (PEAK / peak)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=Path, default=DEFAULT_SCENARIOS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", action="append", help="scenario id (repeatable)")
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("error: espeak-ng not found (apt-get install -y espeak-ng)", file=sys.stderr)
        return 2
    spec = yaml.safe_load(args.scenarios.read_text())
    generator = spec.get("generator", {})
    defaults = spec.get("defaults", {})
    version = espeak_version()
    recorded = str(generator.get("version", ""))
    found = re.search(r"\d+\.\d+(\.\d+)?", version)
    if found is None or not recorded.startswith(found.group(0)):
        print(f"warning: scenarios were made with espeak-ng {recorded}; this is {version}")
    args.out.mkdir(parents=True, exist_ok=True)
    rate = int(generator.get("sample_rate_hz", 8000))
    for call in spec["calls"]:
        if args.only and call["id"] not in args.only:
            continue
        audio = render(call, generator, defaults)
        path = args.out / f"{call['id']}.wav"
        sf.write(path, audio, rate, subtype="PCM_16")
        print(
            f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
            f"  {len(audio) / rate:5.1f} s  {call['expect']['decision']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
