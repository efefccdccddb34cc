"""Scripted calls cut from the demo audio: trailing silence trimmed, phrases spliced.

The demo WAVs (espeak-ng, 8 kHz, digital silence between lines) end with 3 s of silence. Exotel
calls Passthru when the caller's last words may be the moment the stream stops, so these calls
end right where the last phrase does: a calm call, then the last phrase of an escalating call.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

RATE_HZ = 8000
_WINDOW = RATE_HZ // 50  # 20 ms


def read_pcm(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        assert wav.getframerate() == RATE_HZ and wav.getnchannels() == 1, path
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).copy()


def write_pcm(path: Path, pcm: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE_HZ)
        wav.writeframes(pcm.astype(np.int16).tobytes())
    return path


def speech_spans(pcm: np.ndarray, min_gap_ms: int = 600) -> list[tuple[int, int]]:
    """(start, end) sample ranges of speech; pauses shorter than ``min_gap_ms`` join lines."""
    n = len(pcm) // _WINDOW
    windows = pcm[: n * _WINDOW].astype(np.float32).reshape(n, _WINDOW) / 32768.0
    loud = np.sqrt(np.mean(windows**2, axis=1)) > 10 ** (-45 / 20)  # -45 dBFS
    spans: list[tuple[int, int]] = []
    gap = min_gap_ms * RATE_HZ // 1000
    for i in np.flatnonzero(loud):
        start, end = int(i) * _WINDOW, (int(i) + 1) * _WINDOW
        if spans and start - spans[-1][1] < gap:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def trimmed(pcm: np.ndarray) -> np.ndarray:
    """The call up to the end of its last speech: no trailing silence."""
    return pcm[: speech_spans(pcm)[-1][1]]


def last_phrase(pcm: np.ndarray) -> np.ndarray:
    """The last spoken line (from the pause before it to its last sound)."""
    start, end = speech_spans(pcm)[-1]
    return pcm[max(0, start - RATE_HZ // 10) : end]


def silence(ms: int) -> np.ndarray:
    return np.zeros(RATE_HZ * ms // 1000, dtype=np.int16)


def splice(*parts: np.ndarray, pause_ms: int = 900) -> np.ndarray:
    """Parts one after another with a pause between (none after the last)."""
    out: list[np.ndarray] = []
    for i, part in enumerate(parts):
        if i:
            out.append(silence(pause_ms))
        out.append(part)
    return np.concatenate(out)
