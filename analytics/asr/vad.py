"""Voice activity detection and utterance cutting (Silero VAD via onnxruntime, plus an energy gate).

Two Silero models run offline through onnxruntime, both on 512-sample windows at 16 kHz (32 ms)
with 64 samples of context and a recurrent state carried from window to window:

* ``silero-vad`` (default): v6.2 from the PyPI package ``silero-vad`` (``data/silero_vad.onnx``;
  installed without its torch dependencies, never imported). On the telephone channel (300-3400
  Hz, mu-law) its speech probability stays put whatever the level; the older export below swung
  between 0.1 and 0.8 of the speech windows with a few dB of gain on the same audio.
* ``faster-whisper``: the v6 export bundled with faster-whisper
  (``faster_whisper/assets/silero_vad_v6.onnx``), scoring a batch of windows in one call.

One ``InferenceSession`` (:mod:`analytics.asr.silero`) is shared by every call in the process;
each call has its own :class:`Segmenter` (states, buffers), and the worker scores the windows of
all its calls together (:mod:`analytics.asr.vadbatch`: :meth:`Segmenter.take`, the model, then
:meth:`Segmenter.cut`). Windows quieter than an energy floor skip the model: silence costs almost
nothing.

:class:`Segmenter` turns a call's audio into utterances: speech starts when the speech probability
crosses ``threshold`` and ends after ``min_silence_ms`` below ``threshold - 0.15``; the utterance is
padded by ``speech_pad_ms`` on both sides (never back past the previous utterance's end), bursts
shorter than ``min_speech_ms`` are dropped and anything longer than ``max_utterance_ms`` is cut
(Whisper's window is 30 s).

Replays cut the same utterances, so the same ids (an utterance's id is its start offset, see
:mod:`analytics.asr.replay`): a window's speech probability depends on the last ``HISTORY_MS`` of
audio only, wherever a segmenter started. Silero's recurrent state remembers the whole call (a
run started seconds into a call still differs from one started at 0 by up to 0.06 in probability
8 s later), so each call runs two states, restarted in turn every ``HISTORY_WINDOWS`` windows on
the stream's window grid, and each window is scored by the older one, which has heard 5 to 10 s
(one batch of two: 1.3 times the cost of one state). Shorter histories cost accuracy: with 1.5 to
3 s whole quiet utterances were missed (telephone corpus WER 20.5 %; 17.2 % with 5 to 10 s).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analytics.asr.audio import FloatAudio
from analytics.asr.silero import CONTEXT as CONTEXT
from analytics.asr.silero import RATE_HZ as RATE_HZ
from analytics.asr.silero import WINDOW as WINDOW
from analytics.asr.silero import WINDOW_MS as WINDOW_MS
from analytics.asr.silero import SileroVad as SileroVad
from analytics.asr.silero import VadError as VadError
from analytics.asr.silero import VadModel as VadModel
from analytics.asr.silero import VadState as VadState
from analytics.asr.silero import default_vad_path as default_vad_path
from analytics.asr.silero import silero_package_path as silero_package_path

HISTORY_WINDOWS = 160  # a window is scored by a VAD state that has heard 5 to 10 s of audio
HISTORY_MS = 2 * HISTORY_WINDOWS * WINDOW_MS  # all a window's probability depends on (10 240)


@dataclass(frozen=True)
class VadConfig:
    threshold: float = 0.5
    min_silence_ms: int = 400
    speech_pad_ms: int = 200
    min_speech_ms: int = 200
    energy_floor_dbfs: float = -75.0
    max_utterance_ms: int = 20_000
    early_end_ms: int = 0


@dataclass(frozen=True)
class SpeechSegment:
    """One cut utterance: 16 kHz float audio and its position in the call (ms).

    ``keep`` is False for a burst shorter than ``min_speech_ms``: a streaming recogniser still
    has to be reset for it, but nothing is published.
    """

    audio: FloatAudio
    start_ms: int
    end_ms: int
    keep: bool = True


@dataclass(frozen=True)
class TentativeEnd:
    """Silence has begun: the utterance as it will be cut if the silence lasts.

    A batch recogniser may start decoding it now; if the final :class:`SpeechSegment` has the same
    start and end, that decode is its result (the audio is identical), else it is discarded.
    """

    utterance: SpeechSegment


@dataclass(frozen=True)
class SpeechChunk:
    """Speech audio of the open utterance (in order), for streaming recognisers."""

    audio: FloatAudio
    utterance_start_ms: int


@dataclass(frozen=True)
class ResumePoint:
    """A resumed call: no utterance opens before ``open_from_ms`` (the audio its previous owner
    had finished: the end of its last final transcript or its last progress marker) and no
    utterance's pad reaches back past ``floor_ms`` (the end of its last final transcript)."""

    floor_ms: int = 0
    open_from_ms: int = 0


@dataclass(frozen=True)
class Windows:
    """A chunk's whole 512-sample windows (n, 512), their mean power, the first one's sample
    position in the call (what :meth:`Segmenter.take` gives :meth:`Segmenter.cut`)."""

    audio: FloatAudio
    powers: np.ndarray[Any, np.dtype[np.float32]]
    start: int


@dataclass
class SegmentResult:
    """What one ``Segmenter.feed`` produced, in order."""

    events: list[SpeechChunk | SpeechSegment | TentativeEnd] = field(default_factory=list)
    had_speech: bool = False
    in_speech: bool = False


class Segmenter:
    """Per-call utterance cutter over 16 kHz float audio (plain class, no I/O).

    Owned by a :class:`analytics.asr.service.CallTranscriber` (analytics worker process), or
    by the offline loop. A resumed call starts with a :class:`ResumePoint`; the audio before its
    ``open_from_ms`` only brings the VAD states and the pad to where the first run had them.
    """

    def __init__(
        self,
        vad: SileroVad | None,
        config: VadConfig,
        start_ms: int = 0,
        resume: ResumePoint | None = None,
    ) -> None:
        self.vad = vad
        self.config = config
        # two states, restarted in turn every HISTORY_WINDOWS on the stream's window grid
        self.states = (VadState(), VadState())
        self._pending = np.zeros(0, dtype=np.float32)
        self._position = start_ms * RATE_HZ // 1000  # samples from call start
        # Windows lie on one grid from the stream start (multiples of WINDOW samples) whatever
        # frame a segmenter starts at: a worker that resumes a call mid-stream (restart,
        # rebalance) cuts an utterance at the same offsets, so it gets the same id
        # (call SID + start offset). The few samples before the first grid line are skipped.
        self._skip = (-self._position) % WINDOW
        self._position += self._skip
        resume = resume or ResumePoint()
        self._floor = resume.floor_ms * RATE_HZ // 1000
        self._open_from = resume.open_from_ms * RATE_HZ // 1000
        self._preroll_max = max(1, -(-config.speech_pad_ms // WINDOW_MS))
        self._preroll: deque[FloatAudio] = deque(maxlen=self._preroll_max)
        self._speech: list[FloatAudio] = []
        self._speech_origin = 0  # sample position of self._speech[0]
        self._speech_start = 0
        self._last_speech_end = 0
        self._silence_windows = 0
        self._speech_windows = 0
        self.in_speech = False
        self._floor_power = 10.0 ** (config.energy_floor_dbfs / 10.0)

    @property
    def position_ms(self) -> int:
        return self._position * 1000 // RATE_HZ

    def gate(self, windows: Windows, i: int) -> float | None:
        """Window ``i``'s speech probability without the model (0 under the energy floor; 1
        with no model), or None: score it with :meth:`pick`. Resets a VAD state where its turn
        starts. A probability is a function of the last ``HISTORY_MS`` of audio (module
        docstring): whether a window is scored must not depend on the segmenter's state."""
        phase = (windows.start // WINDOW + i) % (2 * HISTORY_WINDOWS)
        if phase in (0, HISTORY_WINDOWS):
            self.states[phase // HISTORY_WINDOWS].reset()
        if windows.powers[i] < self._floor_power:
            return 0.0
        if self.vad is None:
            return 1.0
        return None

    @staticmethod
    def pick(windows: Windows, i: int, probs: np.ndarray[Any, np.dtype[np.float32]]) -> float:
        """Window ``i``'s probability from its scores by both states (the older state's)."""
        phase = (windows.start // WINDOW + i) % (2 * HISTORY_WINDOWS)
        return float(probs[0] if phase >= HISTORY_WINDOWS else probs[1])

    def take(self, audio: FloatAudio) -> Windows:
        """The whole windows a chunk of 16 kHz audio completes (the rest waits for the next)."""
        if self._skip:
            skipped = min(self._skip, audio.shape[0])
            self._skip -= skipped
            audio = audio[skipped:]
        data = np.concatenate([self._pending, audio]) if self._pending.size else audio
        n = data.shape[0] // WINDOW
        self._pending = np.array(data[n * WINDOW :], dtype=np.float32)
        audio = np.asarray(data[: n * WINDOW], dtype=np.float32).reshape(n, WINDOW)
        powers = np.mean(np.square(audio, dtype=np.float32), axis=1)
        return Windows(audio, powers, self._position)

    def score(self, windows: Windows) -> list[float]:
        """Each window's speech probability, this call's windows alone (the model once per
        window scored); :func:`analytics.asr.vadbatch.score_many` scores several calls'."""
        probs: list[float] = []
        for i in range(len(windows.audio)):
            prob = self.gate(windows, i)
            if prob is None:
                assert self.vad is not None
                scores = self.vad.probabilities_each(windows.audio[i], self.states)
                prob = self.pick(windows, i, scores)
            probs.append(prob)
        return probs

    def feed(self, audio: FloatAudio) -> SegmentResult:
        """Consume a chunk of 16 kHz audio; returns finished utterances and this chunk's speech."""
        windows = self.take(audio)
        return self.cut(windows, self.score(windows))

    def cut(self, taken: Windows, probs: Sequence[float]) -> SegmentResult:
        """Cut utterances over the windows :meth:`take` gave, with their probabilities."""
        result = SegmentResult()
        n = len(taken.audio)
        if n == 0:
            result.in_speech = self.in_speech
            return result
        windows = taken.audio
        cfg = self.config
        low = max(0.01, cfg.threshold - 0.15)
        silence_limit = max(1, cfg.min_silence_ms // WINDOW_MS)
        # the tentative cut must already contain the end pad, so its audio equals the final one
        early_limit = max(-(-cfg.early_end_ms // WINDOW_MS), -(-cfg.speech_pad_ms // WINDOW_MS))
        early = cfg.early_end_ms > 0 and early_limit < silence_limit
        max_windows = cfg.max_utterance_ms // WINDOW_MS
        run: list[FloatAudio] = []

        def flush_run() -> None:
            if run:
                start_ms = self._speech_start * 1000 // RATE_HZ
                result.events.append(SpeechChunk(np.concatenate(run), max(0, start_ms)))
                run.clear()

        for i in range(n):
            window = windows[i]
            start = self._position
            self._position += WINDOW
            prob = probs[i]
            if not self.in_speech:
                if prob >= cfg.threshold and start >= self._open_from:
                    run.append(self._open(window, start))
                    result.had_speech = True
                else:
                    self._preroll.append(window)
                continue
            self._speech.append(window)
            run.append(window)
            if prob >= low:
                self._silence_windows = 0
                if prob >= cfg.threshold:
                    self._speech_windows += 1
                    self._last_speech_end = self._position
                    result.had_speech = True
            else:
                self._silence_windows += 1
            if self._silence_windows >= silence_limit or len(self._speech) >= max_windows:
                flush_run()
                result.events.append(self._close())
            elif early and self._silence_windows == early_limit:
                flush_run()
                result.events.append(TentativeEnd(self._snapshot()))
        flush_run()
        result.in_speech = self.in_speech
        return result

    def _open(self, window: FloatAudio, start: int) -> FloatAudio:
        """Speech starts in ``window``: open an utterance padded back over the preroll (never
        before the floor); returns its audio so far."""
        self.in_speech = True
        self._speech = [*self._preroll, window]
        self._speech_origin = start - WINDOW * len(self._preroll)
        self._speech_start = min(max(self._speech_origin, self._floor), start)
        self._preroll.clear()
        self._last_speech_end = self._position
        self._silence_windows = 0
        self._speech_windows = 1
        head: FloatAudio = np.concatenate(self._speech)[self._speech_start - self._speech_origin :]
        return head

    def flush(self) -> SpeechSegment | None:
        """End of call: close an open utterance."""
        if not self.in_speech:
            return None
        return self._close()

    def _snapshot(self) -> SpeechSegment:
        pad = self.config.speech_pad_ms * RATE_HZ // 1000
        end = min(self._position, self._last_speech_end + pad)
        audio = np.concatenate(self._speech)[
            self._speech_start - self._speech_origin : max(0, end - self._speech_origin)
        ]
        speech_ms = self._speech_windows * WINDOW_MS
        return SpeechSegment(
            audio=np.ascontiguousarray(audio, dtype=np.float32),
            start_ms=max(0, self._speech_start * 1000 // RATE_HZ),
            end_ms=end * 1000 // RATE_HZ,
            keep=speech_ms >= self.config.min_speech_ms,
        )

    def _close(self) -> SpeechSegment:
        utterance = self._snapshot()
        self.in_speech = False
        # The silence that closed it pads the next utterance, back to this one's end at most:
        # a replay that resumes after this utterance knows its end (not where it was closed).
        self._preroll.extend(self._speech[-self._preroll_max :])
        self._floor = utterance.end_ms * RATE_HZ // 1000
        self._speech = []
        self._silence_windows = 0
        self._speech_windows = 0
        return utterance
