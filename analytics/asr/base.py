"""The recogniser interface: plain classes, no framework import.

A :class:`Recognizer` is loaded once per process and opens one :class:`RecognizerStream` per
call. Audio reaches a stream already cut by the VAD (:mod:`analytics.asr.vad`) and resampled to
16 kHz: ``accept`` takes the speech of the open utterance chunk by chunk (returning a partial
hypothesis when the backend streams) and ``finish`` returns the utterance's final hypothesis and
resets the stream for the next one. Offsets are in ms from call start.

Backends whose final decode is expensive and batchable (Whisper) also implement
``finish_batch``: one pass over utterances from many calls. This module imports no backend:
:func:`analytics.asr.engines.load_recognizer` picks one from the worker settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from analytics.asr.audio import FloatAudio
from analytics.asr.vad import SpeechSegment
from schemas.records import Transcript, Word


class AsrError(RuntimeError):
    """A recogniser could not be loaded or failed on an utterance."""


class ModelNotFoundError(AsrError):
    """A model directory is missing; the message names the package or setting to fix it."""


#: [start, end) of a redacted part of a text, and its kind ("PHONE")
RedactedSpan = tuple[int, int, str]


@dataclass(frozen=True)
class WordTiming:
    word: str
    start_ms: int
    end_ms: int
    confidence: float | None = None


@dataclass(frozen=True)
class Hypothesis:
    """A partial or final recognition result for one utterance."""

    text: str
    is_final: bool
    start_ms: int
    end_ms: int
    confidence: float | None = None
    words: tuple[WordTiming, ...] = field(default_factory=tuple)
    #: the language transcribed (configured or detected); None when the backend cannot say
    language: str | None = None

    def to_transcript(
        self,
        *,
        call_sid: str,
        text: str,
        pii_kinds: list[str],
        engine: str,
        speech_end_at_ms: int,
        produced_at_ms: int,
        stream_sid: str = "",
        tenant: str = "default",
        campaign: str = "default",
        redacted: Sequence[RedactedSpan] = (),
        behind: bool = False,
    ) -> Transcript:
        """The published record; ``text`` is the redacted text and ``redacted`` the spans of
        ``self.text`` it replaced: the words in them keep their timings and carry the
        placeholder instead of their text (:func:`mask_words`)."""
        return Transcript(
            call_sid=call_sid,
            stream_sid=stream_sid,
            tenant=tenant,
            campaign=campaign,
            utterance_id=f"{call_sid}-{self.start_ms}",
            # The start offset, not a counter: monotonic per call and the same when a restarted
            # worker re-transcribes the utterance, so downstream stages can drop replays.
            utterance_index=self.start_ms,
            is_final=self.is_final,
            text=text,
            pii_kinds=pii_kinds,
            start_ms=self.start_ms,
            end_ms=self.end_ms,
            confidence=self.confidence,
            words=mask_words(self.text, self.words, redacted),
            language=self.language,
            engine=engine,
            speech_end_at_ms=speech_end_at_ms,
            produced_at_ms=produced_at_ms,
            latency_ms=float(produced_at_ms - speech_end_at_ms),
            behind=behind,
        )


def mask_words(
    text: str, words: Sequence[WordTiming], redacted: Sequence[RedactedSpan]
) -> list[Word]:
    """The published words: each found in ``text`` in order; one that overlaps a redacted span
    keeps its times and reads ``[KIND]`` (a number spoken as five words is five ``[PHONE]``
    words, so a later step can mute exactly those). A word that cannot be placed in ``text``
    while anything was redacted is masked too: it might be the PII."""
    out: list[Word] = []
    pos = 0
    for w in words:
        token = w.word.strip()
        at = text.find(token, pos) if token else -1
        kind: str | None = None
        if at < 0:
            kind = "REDACTED" if redacted else None
        else:
            pos = at + len(token)
            kind = next((k for s, e, k in redacted if s < pos and at < e), None)
        word = w.word if kind is None else f"[{kind}]"
        out.append(Word(word=word, start_ms=w.start_ms, end_ms=w.end_ms, confidence=w.confidence))
    return out


@runtime_checkable
class RecognizerStream(Protocol):
    """One call's recognition state.

    Held by its :class:`analytics.asr.service.CallTranscriber` (analytics worker process).
    """

    def accept(self, audio: FloatAudio, start_ms: int) -> Hypothesis | None:
        """Speech audio (16 kHz) of the open utterance; a partial hypothesis or None."""
        ...

    def finish(self, utterance: SpeechSegment) -> Hypothesis:
        """The final hypothesis of ``utterance``; resets the stream for the next one."""
        ...

    def close(self) -> None:
        """Release the call's resources."""
        ...


@runtime_checkable
class Recognizer(Protocol):
    engine: str
    #: True when ``accept`` does real work (must run in the executor); False when it only buffers.
    streaming: bool
    #: most utterances ``finish_batch`` decodes in one pass (1 = no batching).
    max_batch: int

    def open_stream(self, language: str | None = None) -> RecognizerStream:
        """One call's stream; ``language``: what the caller speaks (a Whisper code or "auto"
        for detection; None: the recogniser's configured one). Monolingual models ignore it."""
        ...

    def finish_batch(
        self, items: Sequence[tuple[RecognizerStream, SpeechSegment]]
    ) -> list[Hypothesis]: ...

    def warm_up(self) -> None:
        """Load what the calling (executor) thread needs, e.g. its own model instance."""
        ...


def finish_each(items: Sequence[tuple[RecognizerStream, SpeechSegment]]) -> list[Hypothesis]:
    """``finish_batch`` for backends without batching."""
    return [stream.finish(utterance) for stream, utterance in items]
