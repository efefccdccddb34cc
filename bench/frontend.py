"""Per-call signal conditioning before VAD and ASR: streaming resampler and automatic gain.

The worker receives a call as 100 ms PCM16 frames at 8 (or 16, 24) kHz; VAD and Whisper want
16 kHz. Resampling each frame on its own (``scipy.signal.resample_poly`` per frame) treats the
audio outside the frame as silence, so every frame edge gets a ~1 ms dip: a 10 Hz click train.
:class:`StreamResampler` keeps the filter's history across frames and its output is the
whole-signal ``resample_poly`` output, delayed by the filter's half length (1.25 ms at 8 kHz).

:class:`Agc` brings quiet callers up to a speech level before the VAD (Silero's speech
probability falls on very quiet input, and the energy gate skips it entirely) and Whisper: a
peak-level follower on 32 ms windows (instant attack, slow release), a gain limited to
``max_gain_db``, never attenuating. Windows under the noise floor do not move the level.
"""

from __future__ import annotations

from math import gcd

import numpy as np
from numpy.typing import NDArray
from scipy.signal import firwin, upfirdn

from analytics.asr.audio import FloatAudio


class StreamResampler:
    """Rational-rate resampling of a stream in chunks, equal to ``resample_poly`` on the whole.

    Same filter as ``scipy.signal.resample_poly`` (Kaiser, beta 5, half length 10 x max(up, down)).
    Each output sample is emitted as soon as every input it depends on has arrived; ``flush``
    emits the tail (the input beyond the end counts as silence, as in ``resample_poly``).
    """

    def __init__(self, from_hz: int, to_hz: int) -> None:
        g = gcd(int(from_hz), int(to_hz))
        self.up, self.down = int(to_hz) // g, int(from_hz) // g
        self.identity = self.up == self.down
        self.half = 10 * max(self.up, self.down)
        taps = firwin(2 * self.half + 1, 1.0 / max(self.up, self.down), window=("kaiser", 5.0))
        self.taps: NDArray[np.float64] = taps * self.up
        self._buf = np.zeros(0, dtype=np.float64)
        self._base = 0  # global index of _buf[0]
        self._emitted = 0  # global index of the next output sample
        self._received = 0

    def process(self, audio: FloatAudio) -> FloatAudio:
        if self.identity:
            return np.asarray(audio, dtype=np.float32)
        self._received += audio.shape[0]
        return self._emit(np.asarray(audio, dtype=np.float64), self._received)

    def flush(self) -> FloatAudio:
        """The remaining output (as if the input ended with silence)."""
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        total_out = -(-self._received * self.up // self.down)
        pad = np.zeros(self.half // self.up + 2, dtype=np.float64)
        out = self._emit(pad, self._received + pad.shape[0])
        return out[: max(0, total_out - (self._emitted - out.shape[0]))]

    def _emit(self, samples: NDArray[np.float64], total_in: int) -> FloatAudio:
        buf = np.concatenate([self._buf, samples]) if self._buf.size else samples
        end = self._base + buf.shape[0]
        # output j needs inputs up to (j * down + half) / up
        j_end = ((end - 1) * self.up - self.half) // self.down + 1 if end > 0 else 0
        out = np.zeros(0, dtype=np.float32)
        if j_end > self._emitted:
            full = upfirdn(self.taps, buf, self.up, 1)
            idx = np.arange(self._emitted, j_end) * self.down + self.half - self._base * self.up
            out = full[idx].astype(np.float32)
            self._emitted = j_end
        keep_from = max(self._base, (self._emitted * self.down - self.half) // self.up - 1)
        self._buf = buf[keep_from - self._base :]
        self._base = keep_from
        return out


class Agc:
    """Automatic gain: quiet speech up to ``target_dbfs`` peak level, at most ``max_gain_db``."""

    def __init__(
        self,
        target_dbfs: float = -6.0,
        max_gain_db: float = 30.0,
        floor_dbfs: float = -80.0,
        release_db_per_s: float = 3.0,
        rate_hz: int = 16_000,
        window: int = 512,
    ) -> None:
        self.target = target_dbfs
        self.max_gain = max_gain_db
        self.floor = floor_dbfs
        self.release = release_db_per_s * window / rate_hz
        self.window = window
        self.level_db: float | None = None  # tracked peak level of speech, dBFS
        self._gain_db = 0.0

    @property
    def gain_db(self) -> float:
        return self._gain_db

    def process(self, audio: FloatAudio) -> FloatAudio:
        out = np.empty_like(audio, dtype=np.float32)
        for start in range(0, audio.shape[0], self.window):
            chunk = audio[start : start + self.window]
            peak = float(np.max(np.abs(chunk))) if chunk.size else 0.0
            peak_db = 20.0 * np.log10(peak) if peak > 0 else -200.0
            if peak_db > self.floor:
                if self.level_db is None or peak_db > self.level_db:
                    self.level_db = peak_db
                else:
                    self.level_db = max(peak_db, self.level_db - self.release)
            if self.level_db is not None:
                self._gain_db = float(np.clip(self.target - self.level_db, 0.0, self.max_gain))
            gain = np.float32(10.0 ** (self._gain_db / 20.0))
            out[start : start + chunk.shape[0]] = np.clip(chunk * gain, -1.0, 1.0)
        return out
