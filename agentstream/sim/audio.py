"""Audio for the call simulator: read WAV/FLAC, mix to mono, resample, cut 100 ms frames.

Kept independent of ``analytics/`` (the simulator is a client and must not share the server's
audio code, or a bug there would be invisible): a small polyphase resampler from scipy.
"""

from __future__ import annotations

from collections.abc import Iterator
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

AUDIO_SUFFIXES = (".wav", ".flac")


def to_pcm16(samples: np.ndarray) -> bytes:
    """float samples in [-1, 1] to PCM16 little-endian bytes (clipped)."""
    clipped = np.clip(samples, -1.0, 1.0)
    return bytes((clipped * 32767.0).round().astype("<i2").tobytes())


def resample(samples: np.ndarray, rate_from: int, rate_to: int) -> np.ndarray:
    """Polyphase resampling between integer rates (8/16/24 kHz, 22.05/44.1/48 kHz ...)."""
    if rate_from == rate_to:
        return samples
    g = gcd(rate_from, rate_to)
    return np.asarray(resample_poly(samples, rate_to // g, rate_from // g), dtype=np.float32)


def read_mono(path: Path) -> tuple[np.ndarray, int]:
    """The whole file as mono float32 samples and its sample rate."""
    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return np.asarray(samples.mean(axis=1), dtype=np.float32), int(rate)


def load_pcm16(path: Path, rate_hz: int) -> bytes:
    """The whole file as mono PCM16 LE at ``rate_hz``."""
    mono, rate = read_mono(path)
    return to_pcm16(resample(mono, rate, rate_hz))


def frames(pcm16: bytes, rate_hz: int, frame_ms: int = 100) -> Iterator[bytes]:
    """Cut PCM16 into ``frame_ms`` chunks (the last one may be shorter, never odd-length)."""
    size = rate_hz * frame_ms // 1000 * 2
    for start in range(0, len(pcm16), size):
        yield pcm16[start : start + size]


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; directories expanded to their WAV/FLAC files, sorted."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES))
        else:
            out.append(path)
    return out
