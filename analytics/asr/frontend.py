"""Per-call signal conditioning before VAD and ASR: streaming resampler and automatic gain.

:class:`FrontEnd` is one call's conditioning state (owned by that call's
:class:`analytics.asr.service.CallTranscriber`, in the worker process holding the call): PCM16
frames at the stream's rate in, 16 kHz float out, for the VAD and the recogniser alike.

The worker receives a call as 100 ms PCM16 frames at 8 (or 16, 24) kHz; VAD and Whisper want
16 kHz. Resampling each frame on its own (``scipy.signal.resample_poly`` per frame) treats the
audio outside the frame as silence, so every frame edge gets a ~1 ms dip: a 10 Hz click train.
:class:`StreamResampler` keeps the filter's history across frames and its output is the
whole-signal ``resample_poly`` output, delayed by the filter's half length (1.25 ms at 8 kHz).

:class:`Agc` brings quiet callers up to a speech level before the VAD (Silero's speech
probability falls on very quiet input, and the energy gate skips it entirely) and Whisper: a
peak-level follower on 32 ms windows (instant attack, slow release), a gain limited to
``max_gain_db``, never attenuating. Windows under the noise floor do not raise the level. The
level remembers the last ``memory_ms`` of audio only, so a worker that resumes a call that far
before a point applies the same gain from that point on as the worker that ran the whole call
(:mod:`analytics.asr.replay`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from math import gcd
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.signal import firwin, upfirdn

from analytics.asr.audio import FloatAudio, pcm16_to_float, resample


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
        self.taps: NDArray[np.float64] = np.ones(1)
        if not self.identity:
            cutoff = 1.0 / max(self.up, self.down)
            self.taps = firwin(2 * self.half + 1, cutoff, window=("kaiser", 5.0)) * self.up
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


AGC_MEMORY_MS = 2_000


class Agc:
    """Automatic gain: quiet speech up to ``target_dbfs`` peak level, at most ``max_gain_db``.

    The level is the highest window peak of the last ``memory_ms``, less ``release_db_per_s``
    for its age (a peak follower with a bounded memory: a sliding maximum, O(1) amortised per
    window). With nothing over the floor in that time the gain is 0 dB (the window is under the
    floor too).
    """

    def __init__(
        self,
        target_dbfs: float = -6.0,
        max_gain_db: float = 30.0,
        floor_dbfs: float = -80.0,
        release_db_per_s: float = 3.0,
        rate_hz: int = 16_000,
        window: int = 512,
        memory_ms: int = AGC_MEMORY_MS,
    ) -> None:
        self.target = target_dbfs
        self.max_gain = max_gain_db
        self.floor = floor_dbfs
        self.release = release_db_per_s / rate_hz  # dB per sample
        self.memory = memory_ms * rate_hz // 1000  # samples
        self.window = window
        # (sample index, peak dBFS) of recent windows, each louder than any later one once aged
        self._peaks: deque[tuple[int, float]] = deque()
        self._t = 0  # samples processed
        self._gain_db = 0.0

    @property
    def gain_db(self) -> float:
        return self._gain_db

    def process(self, audio: FloatAudio) -> FloatAudio:
        out = np.empty_like(audio, dtype=np.float32)
        peaks, release = self._peaks, self.release
        for start in range(0, audio.shape[0], self.window):
            chunk = audio[start : start + self.window]
            t = self._t + start
            while peaks and t - peaks[0][0] >= self.memory:
                peaks.popleft()
            peak = float(np.max(np.abs(chunk))) if chunk.size else 0.0
            peak_db = 20.0 * float(np.log10(peak)) if peak > 0 else -200.0
            if peak_db > self.floor:
                while peaks and peaks[-1][1] - release * (t - peaks[-1][0]) <= peak_db:
                    peaks.pop()
                peaks.append((t, peak_db))
            gain_db = 0.0
            if peaks:
                level_db = peaks[0][1] - release * (t - peaks[0][0])
                gain_db = float(np.clip(self.target - level_db, 0.0, self.max_gain))
            self._gain_db = gain_db
            gain = np.float32(10.0 ** (gain_db / 20.0))
            out[start : start + chunk.shape[0]] = np.clip(chunk * gain, -1.0, 1.0)
        self._t += audio.shape[0]
        return out


@dataclass(frozen=True)
class FrontEndConfig:
    """How a call's audio is conditioned before the VAD and the recogniser."""

    #: ``stream``: one resampler per call (filter state kept across frames);
    #: ``frame``: each frame resampled alone (edges filtered against silence: 10 Hz clicks)
    resampler: Literal["stream", "frame"] = "stream"
    agc: bool = False  # the worker turns it on (AGENTSTREAM_WORKER_AGC)
    agc_target_dbfs: float = -6.0
    agc_max_gain_db: float = 30.0
    agc_memory_ms: int = AGC_MEMORY_MS  # how far back the level looks (a replay's lead-in)


class FrontEnd:
    """One call's conditioning: PCM16 frames at ``rate_hz`` to 16 kHz float (VAD and ASR)."""

    def __init__(self, rate_hz: int, config: FrontEndConfig, out_hz: int = 16_000) -> None:
        self.config = config
        self.out_hz = out_hz
        self.agc = (
            Agc(
                target_dbfs=config.agc_target_dbfs,
                max_gain_db=config.agc_max_gain_db,
                memory_ms=config.agc_memory_ms,
            )
            if config.agc
            else None
        )
        self._set_rate(rate_hz)

    def _set_rate(self, rate_hz: int) -> None:
        self.rate_hz = rate_hz
        self.resampler = (
            StreamResampler(rate_hz, self.out_hz) if self.config.resampler == "stream" else None
        )

    def process(self, pcm: bytes, rate_hz: int | None = None) -> FloatAudio:
        """One frame; ``rate_hz`` (the frame's) restarts the resampler if the rate changed."""
        if rate_hz is not None and rate_hz != self.rate_hz:
            self._set_rate(rate_hz)
        audio = pcm16_to_float(pcm)
        if self.resampler is not None:
            audio = self.resampler.process(audio)
        elif self.rate_hz != self.out_hz:
            audio = resample(audio, self.rate_hz, self.out_hz)
        if self.agc is not None:
            audio = self.agc.process(audio)
        return audio
