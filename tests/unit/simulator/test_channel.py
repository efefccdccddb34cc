"""The simulated telephone channel: band limits, G.711 mu-law, determinism."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from agentstream.sim.channel import (
    CHANNELS,
    apply_channel,
    band_pass,
    load_channel_pcm16,
    mulaw_decode,
    mulaw_encode,
)

pytestmark = pytest.mark.unit


def tone(freq_hz: float, rate_hz: int = 8000, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def level_db(x: np.ndarray) -> float:
    core = x[len(x) // 8 : -len(x) // 8]  # away from the filter's edges
    return 10 * float(np.log10(np.mean(np.square(core.astype(np.float64))) + 1e-30))


@pytest.mark.parametrize("freq", [50.0, 150.0, 3700.0, 3900.0])
def test_band_pass_removes_what_the_phone_network_does_not_carry(freq: float) -> None:
    x = tone(freq)
    assert level_db(band_pass(x)) < level_db(x) - 40


@pytest.mark.parametrize("freq", [400.0, 1000.0, 3000.0])
def test_band_pass_keeps_the_voice_band(freq: float) -> None:
    x = tone(freq)
    assert abs(level_db(band_pass(x)) - level_db(x)) < 0.5
    # zero delay: the FIR's group delay is removed, the tone stays in phase
    core = slice(1000, 7000)
    assert np.corrcoef(band_pass(x)[core], x[core])[0, 1] > 0.999


def test_mulaw_codes_round_trip_and_error_bounds() -> None:
    codes = np.arange(256, dtype=np.uint8)
    linear = mulaw_decode(codes)
    assert linear.min() == -32124 and linear.max() == 32124
    again = mulaw_encode(linear)
    # every code decodes to a value that encodes back to it (0x7F and 0xFF both decode to 0)
    assert np.array_equal(again[codes != 0x7F], codes[codes != 0x7F])
    x = np.arange(-32124, 32125, dtype=np.int16)
    err = np.abs(mulaw_decode(mulaw_encode(x)).astype(np.int32) - x.astype(np.int32))
    mag = np.abs(x.astype(np.int32))
    assert err[mag < 32].max() <= 8  # the finest steps (8 LSB) near silence
    assert err[mag < 128].max() <= 12
    assert (err[mag >= 128] / mag[mag >= 128]).max() < 0.09  # 4-bit mantissa: a few percent


def test_mulaw_matches_the_reference_tables_when_audioop_is_there() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # removed in Python 3.13
    x = np.arange(-32768, 32768, dtype=np.int16)
    reference = np.frombuffer(audioop.lin2ulaw(x.tobytes(), 2), dtype=np.uint8)
    assert np.array_equal(mulaw_encode(x), reference)
    codes = np.arange(256, dtype=np.uint8)
    assert np.array_equal(
        mulaw_decode(codes), np.frombuffer(audioop.ulaw2lin(codes.tobytes(), 2), dtype=np.int16)
    )


def test_channels_are_deterministic_8khz_and_band_limited() -> None:
    rng = np.random.default_rng(7)
    x16 = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    for channel in CHANNELS:
        a, rate = apply_channel(x16, 16000, channel)  # type: ignore[arg-type]
        b, _ = apply_channel(x16, 16000, channel)  # type: ignore[arg-type]
        assert np.array_equal(a, b)
        assert rate == (16000 if channel == "none" else 8000)
    tel, _ = apply_channel(x16, 16000, "telephone")
    spectrum = np.abs(np.fft.rfft(tel.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(tel.shape[0], 1 / 8000)
    inside = spectrum[(freqs > 400) & (freqs < 3300)].mean()
    outside = spectrum[(freqs < 200) | (freqs > 3600)].mean()
    assert 10 * np.log10(inside / outside) > 25  # mu-law noise floor limits the depth
    # every sample is a mu-law level
    levels = set(mulaw_decode(np.arange(256, dtype=np.uint8)).tolist())
    assert set(np.round(tel * 32768).astype(int).tolist()) <= levels
    with pytest.raises(ValueError, match="unknown channel"):
        apply_channel(x16, 16000, "radio")  # type: ignore[arg-type]


def test_load_channel_pcm16_keeps_the_stream_rate(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    sf.write(str(path), tone(1000, 16000, 0.5), 16000, subtype="PCM_16")
    assert len(load_channel_pcm16(path, 8000, "telephone")) == 8000 * 2 // 2
    assert len(load_channel_pcm16(path, 16000, "telephone")) == 16000 * 2 // 2
