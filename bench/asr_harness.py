"""Shared by the ASR benchmarks: corpus rows, channel audio and the worker's streaming path.

``StreamPath.call`` sends one recording through the worker's :class:`TranscriptionService`
(via ``analytics.asr.offline``, the same path as ``agentstream transcribe``): 100 ms PCM16
frames with their headers, the per-call front end, VAD, speculative decode, batch decoder, with
an in-memory sink. Calls run one at a time, so no utterance is ever batched with another call's
and the text depends on the audio alone (the WER is repeatable).

Decode cost is CPU time (``time.process_time``) around each ``finish_batch``: with one call at a
time nothing else runs meanwhile, and CPU time is far less disturbed by other work on a shared
machine than wall time.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agentstream.sim.channel import Channel, apply_channel
from analytics.asr.audio import FloatAudio, read_audio
from analytics.asr.base import Hypothesis, Recognizer, RecognizerStream
from analytics.asr.offline import OfflineTranscriber
from analytics.asr.ports import Redact
from analytics.asr.service import ServiceConfig
from analytics.asr.vad import SileroVad, SpeechSegment
from schemas.records import Transcript

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "speech" / "corpus.tsv"
FRAME_MS = 100


def corpus_rows(corpus: Path, tiers: Sequence[str]) -> list[dict[str, str]]:
    return [r for r in csv.DictReader(corpus.open(), delimiter="\t") if r["tier"] in tiers]


def channel_audio(path: Path, channel: Channel) -> tuple[FloatAudio, int]:
    """The file as the worker would receive it through ``channel`` (``none``: as recorded)."""
    audio, rate = read_audio(path)
    return apply_channel(audio, rate, channel)


class TimedRecognizer:
    """Delegates to a recogniser and records CPU seconds and utterances per ``finish_batch``."""

    def __init__(self, inner: Recognizer) -> None:
        self.inner = inner
        self.engine = inner.engine
        self.streaming = inner.streaming
        self.max_batch = inner.max_batch
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self.utterances = 0
        self.audio_s = 0.0

    def open_stream(self, language: str | None = None) -> RecognizerStream:
        return self.inner.open_stream(language)

    def warm_up(self) -> None:
        self.inner.warm_up()

    def finish_batch(
        self, items: Sequence[tuple[RecognizerStream, SpeechSegment]]
    ) -> list[Hypothesis]:
        c0, t0 = time.process_time(), time.perf_counter()
        out = self.inner.finish_batch(items)
        self.cpu_s += time.process_time() - c0
        self.wall_s += time.perf_counter() - t0
        self.utterances += len(items)
        self.audio_s += sum(u.audio.shape[0] / 16_000 for _, u in items)
        return out


@dataclass
class StreamPath:
    """The worker's streaming path for recordings (analytics.asr.offline.OfflineTranscriber)."""

    recognizer: Recognizer
    config: ServiceConfig
    vad: SileroVad | None
    redact: Redact | None = None
    _offline: OfflineTranscriber | None = field(default=None, repr=False)

    async def start(self) -> None:
        self._offline = OfflineTranscriber(self.recognizer, self.vad, self.config, self.redact)
        await self._offline.__aenter__()

    async def stop(self) -> None:
        if self._offline is not None:
            await self._offline.__aexit__(None, None, None)

    async def call(
        self, audio: FloatAudio, rate_hz: int, call_sid: str = "", tenant: str = "default"
    ) -> list[Transcript]:
        """Final transcripts of one recording sent as one call (frames, then ``stop``)."""
        assert self._offline is not None, "start() first"
        records = await self._offline.transcribe(audio, rate_hz, call_sid, tenant)
        return [t for t in records if t.is_final]


def text_of(transcripts: Sequence[Transcript]) -> str:
    return " ".join(t.text for t in transcripts if t.is_final).strip()


def wer_table_row(errors: int, words: int) -> str:
    return f"{errors / words:7.2%}" if words else "    n/a"


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else 0.0
