"""Fakes for the ASR tests (plain classes): a recogniser that 'reads' tone amplitudes.

Test audio is made of constant-amplitude tone bursts separated by digital silence; the fake
recogniser names each utterance by its peak amplitude (``"amp 0.30"``), so a test knows which
burst produced which transcript. An utterance at amplitude >= 0.85 raises (a model error).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from analytics.asr.audio import FloatAudio, float_to_pcm16
from analytics.asr.base import Hypothesis, RecognizerStream, WordTiming
from analytics.asr.vad import SpeechSegment

FAIL_AMPLITUDE = 0.85


def amplitude_label(audio: FloatAudio) -> str:
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return f"amp {round(peak * 20) / 20:.2f}"


class FakeStream:
    def __init__(self, owner: FakeRecognizer, language: str | None = None) -> None:
        self.owner = owner
        self.language = language
        self.fed: list[FloatAudio] = []
        self.closed = False

    def accept(self, audio: FloatAudio, start_ms: int) -> Hypothesis | None:
        self.fed.append(audio)
        if not self.owner.streaming:
            return None
        heard = np.concatenate(self.fed)
        return Hypothesis(amplitude_label(heard), False, start_ms, start_ms + len(heard) // 16)

    def finish(self, utterance: SpeechSegment) -> Hypothesis:
        return self.owner.finish_batch([(self, utterance)])[0]

    def close(self) -> None:
        self.closed = True
        self.owner.closed += 1


class FakeRecognizer:
    """Recognises tone amplitude; records batches; fails on loud utterances."""

    engine = "fake"

    def __init__(self, streaming: bool = False, max_batch: int = 4, delay_s: float = 0.0) -> None:
        self.streaming = streaming
        self.max_batch = max_batch
        self.delay_s = delay_s  # time one pass takes, as a real model's would
        self.batches: list[int] = []
        self.streams: list[FakeStream] = []
        self.languages: list[str | None] = []  # asked for, per stream opened
        self.closed = 0
        self.warmed: set[str] = set()
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        with self._lock:
            self.warmed.add(threading.current_thread().name)

    def open_stream(self, language: str | None = None) -> RecognizerStream:
        self.languages.append(language)
        stream = FakeStream(self, language)
        self.streams.append(stream)
        return stream

    def finish_batch(
        self, items: Sequence[tuple[RecognizerStream, SpeechSegment]]
    ) -> list[Hypothesis]:
        with self._lock:
            self.batches.append(len(items))
        if self.delay_s:
            time.sleep(self.delay_s)
        out = []
        for stream, utt in items:
            if isinstance(stream, FakeStream):
                stream.fed = []
            label = amplitude_label(utt.audio)
            if float(label.split()[1]) >= FAIL_AMPLITUDE:
                raise RuntimeError(f"fake model error on {label}")
            # two words ("amp", "0.30"), each half of the utterance
            mid = (utt.start_ms + utt.end_ms) // 2
            words = (
                WordTiming("amp", utt.start_ms, mid),
                WordTiming(label.split()[1], mid, utt.end_ms),
            )
            language = stream.language if isinstance(stream, FakeStream) else None
            out.append(Hypothesis(label, True, utt.start_ms, utt.end_ms, 0.9, words, language))
        return out


def tone(amplitude: float, ms: int, rate_hz: int = 8000, freq_hz: float = 440.0) -> FloatAudio:
    t = np.arange(rate_hz * ms // 1000) / rate_hz
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def silence(ms: int, rate_hz: int = 8000) -> FloatAudio:
    return np.zeros(rate_hz * ms // 1000, dtype=np.float32)


def call_pcm(amplitudes: Sequence[float], speech_ms: int = 600, gap_ms: int = 700) -> bytes:
    """PCM16 at 8 kHz: silence, then one tone burst per amplitude, each followed by a gap."""
    parts = [silence(300)]
    for amp in amplitudes:
        parts += [tone(amp, speech_ms), silence(gap_ms)]
    return float_to_pcm16(np.concatenate(parts))


class GatedRecognizer(FakeRecognizer):
    """Each batch waits for ``gate`` (at most 5 s), then records its utterances' starts in
    ``order``: a test holds the inference thread busy, then lets it go."""

    def __init__(self, max_batch: int = 4) -> None:
        super().__init__(max_batch=max_batch)
        self.gate = threading.Event()
        self.order: list[int] = []

    def finish_batch(
        self, items: Sequence[tuple[RecognizerStream, SpeechSegment]]
    ) -> list[Hypothesis]:
        self.gate.wait(5)
        self.order.extend(utt.start_ms for _, utt in items)
        return super().finish_batch(items)
