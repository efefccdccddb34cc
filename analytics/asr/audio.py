"""Pure audio helpers: read WAV/FLAC files, convert PCM16 bytes, resample.

No Kafka, no models: the simulator and benchmarks may import this freely.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from numpy.typing import NDArray
from scipy.signal import resample_poly

FloatAudio = NDArray[np.float32]

_PCM16_SCALE = 32768.0


def read_audio(path: str | Path, rate_hz: int | None = None) -> tuple[FloatAudio, int]:
    """Read a WAV/FLAC/OGG file as mono float32 in [-1, 1]; resample to ``rate_hz`` if given."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono: FloatAudio = data.mean(axis=1).astype(np.float32) if data.shape[1] > 1 else data[:, 0]
    if rate_hz is not None and rate_hz != rate:
        return resample(mono, rate, rate_hz), rate_hz
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


def resample(audio: FloatAudio, from_hz: int, to_hz: int) -> FloatAudio:
    """Polyphase resampling (anti-aliased); a no-op when the rates match."""
    if from_hz == to_hz or audio.size == 0:
        return np.asarray(audio, dtype=np.float32)
    g = gcd(int(from_hz), int(to_hz))
    out = resample_poly(audio, int(to_hz) // g, int(from_hz) // g)
    return np.asarray(out, dtype=np.float32)


def pcm16_to_float(pcm: bytes) -> FloatAudio:
    """PCM16 LE mono bytes to float32 in [-1, 1] (a trailing odd byte is ignored)."""
    usable = len(pcm) - (len(pcm) % 2)
    ints = np.frombuffer(pcm[:usable], dtype="<i2")
    return (ints.astype(np.float32) / _PCM16_SCALE).astype(np.float32)


def float_to_pcm16(audio: FloatAudio) -> bytes:
    """float32 in [-1, 1] to PCM16 LE bytes (clipped)."""
    clipped = np.clip(audio, -1.0, 32767.0 / _PCM16_SCALE)
    return (clipped * _PCM16_SCALE).round().astype("<i2").tobytes()


def rms_dbfs(audio: FloatAudio) -> float:
    """Root-mean-square level in dB relative to full scale (-inf for digital silence)."""
    if audio.size == 0:
        return float("-inf")
    power = float(np.mean(np.square(audio, dtype=np.float64)))
    return 10.0 * float(np.log10(power)) if power > 0 else float("-inf")


def chunks(pcm: bytes, rate_hz: int, chunk_ms: int) -> list[bytes]:
    """Split PCM16 bytes into chunks of ``chunk_ms`` (the last one may be shorter)."""
    size = max(2, rate_hz * chunk_ms // 1000 * 2)
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]
