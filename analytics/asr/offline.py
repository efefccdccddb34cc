"""Transcription of recordings through the worker's own streaming path, without a broker.

Used by ``agentstream transcribe``, the WER and keyword benchmarks and the model tests, so their
figures are the worker's: each recording is sent as one call, as Exotel would (100 ms PCM16
frames with their headers, then the end of the call), into a :class:`TranscriptionService`
with an in-memory sink instead of Kafka. The front end, VAD, speculative decoding, batch decoder
and redaction are the worker's code, not a copy.

Calls run one at a time, so an utterance is never batched with another call's: the text
depends on the recording alone and the same command gives the same result. (A live worker
batches utterances of concurrent calls; :mod:`analytics.asr.whisper` pads every utterance of
a batch to the same window, which makes the text depend on the other utterances.)

Before this module drove the service, it ran its own loop over the same parts and decoded all
of a file's utterances in one batch at the end; the worker decodes each utterance as it ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

import numpy as np

from analytics.asr.audio import FloatAudio, chunks, float_to_pcm16, read_audio
from analytics.asr.base import Recognizer
from analytics.asr.ports import Redact, ServiceConfig, no_redaction
from analytics.asr.service import TranscriptionService
from analytics.asr.vad import SileroVad
from schemas.records import AudioFrameMeta, DeadLetter, Transcript

FRAME_MS = 100


@dataclass(frozen=True)
class FileResult:
    path: str
    text: str
    transcripts: list[Transcript]
    audio_s: float
    elapsed_s: float


class _Collect:
    """The in-memory sink: every published record, in order."""

    def __init__(self) -> None:
        self.transcripts: list[Transcript] = []
        self.dead: list[DeadLetter] = []

    async def publish(self, transcript: Transcript) -> None:
        self.transcripts.append(transcript)

    async def dead_letter(self, record: DeadLetter) -> None:
        self.dead.append(record)


class OfflineTranscriber:
    """One TranscriptionService (one inference thread) fed one recording (call) at a time.

    ``async with OfflineTranscriber(...) as t: await t.transcribe(audio, rate)``. The model loads
    once, in the service's inference thread, and serves every recording.
    """

    def __init__(
        self,
        recognizer: Recognizer,
        vad: SileroVad | None,
        config: ServiceConfig | None = None,
        redact: Redact | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.recognizer = recognizer
        self._sink = _Collect()
        self._service = TranscriptionService(
            recognizer,
            self._sink,
            replace(config or ServiceConfig(), executor_workers=1),
            vad=vad,
            redact=redact or no_redaction,
            clock=clock,
        )
        self._clock = clock
        self._calls = 0

    async def __aenter__(self) -> OfflineTranscriber:
        await self._service.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._service.stop()

    async def transcribe(
        self,
        audio: FloatAudio,
        rate_hz: int,
        call_sid: str = "",
        tenant: str = "default",
        campaign: str = "default",
    ) -> list[Transcript]:
        """The utterance records the worker would publish for this recording (partials too), in
        order; its watermark records (``marker``) are left out."""
        self._calls += 1
        sid = call_sid or f"offline-{self._calls}"
        self._sink.transcripts = []
        self._sink.dead = []
        received = int(self._clock() * 1000)
        for k, frame in enumerate(chunks(float_to_pcm16(audio), rate_hz, FRAME_MS)):
            meta = AudioFrameMeta(
                call_sid=sid,
                stream_sid=f"offline-{sid}",
                tenant=tenant,
                campaign=campaign,
                sequence_number=k + 1,
                sample_rate_hz=rate_hz,
                received_at_ms=received + k * FRAME_MS,
                offset_ms=k * FRAME_MS,
            )
            self._service.on_frame(meta, frame, _nothing)
        session = self._service.sessions.get(sid)
        if session is not None:
            session.end()
            await session.task
        if self._sink.dead:
            raise RuntimeError(self._sink.dead[0].error)
        return [t for t in self._sink.transcripts if t.marker is None]


def _nothing() -> None:
    return None


def final_text(transcripts: Iterable[Transcript]) -> str:
    return " ".join(t.text for t in transcripts if t.is_final and t.text).strip()


def recognise_audio(
    audio: FloatAudio,
    rate_hz: int,
    recognizer: Recognizer,
    vad: SileroVad | None,
    config: ServiceConfig | None = None,
) -> list[Transcript]:
    """One recording's records (partials and finals), as the worker would publish them."""

    async def run() -> list[Transcript]:
        async with OfflineTranscriber(recognizer, vad, config) as transcriber:
            return await transcriber.transcribe(audio, rate_hz)

    return asyncio.run(run())


def transcribe_files(
    paths: Iterable[str | Path],
    recognizer: Recognizer,
    vad: SileroVad | None,
    config: ServiceConfig | None = None,
    rate_hz: int | None = None,
    redact: Redact | None = None,
) -> Iterator[FileResult | OSError | RuntimeError | ValueError]:
    """Each file (resampled to ``rate_hz`` first when given) as one call, in order; a file that
    cannot be read or transcribed yields its error instead."""
    results: asyncio.Queue[FileResult | OSError | RuntimeError | ValueError | None]
    items = list(paths)
    loop = asyncio.new_event_loop()
    try:
        results = asyncio.Queue()

        async def run() -> None:
            try:
                await transcribe_all()
            finally:
                await results.put(None)  # the reader stops; a failure is raised from the task

        async def transcribe_all() -> None:
            async with OfflineTranscriber(recognizer, vad, config, redact) as transcriber:
                for path in items:
                    started = time.perf_counter()
                    try:
                        audio, rate = read_audio(path, rate_hz)
                        transcripts = await transcriber.transcribe(
                            audio, rate, call_sid=Path(path).stem
                        )
                    except (OSError, RuntimeError, ValueError) as exc:
                        await results.put(exc)
                        continue
                    await results.put(
                        FileResult(
                            str(path),
                            final_text(transcripts),
                            transcripts,
                            float(np.asarray(audio).shape[0]) / rate,
                            time.perf_counter() - started,
                        )
                    )

        task = loop.create_task(run())
        while True:
            item = loop.run_until_complete(results.get())
            if item is None:
                break
            yield item
        loop.run_until_complete(task)
    finally:
        loop.close()


def transcribe_file(
    path: str | Path,
    recognizer: Recognizer,
    vad: SileroVad | None,
    config: ServiceConfig | None = None,
    rate_hz: int | None = None,
    redact: Redact | None = None,
) -> FileResult:
    """Transcribe one WAV/FLAC file (resampled to ``rate_hz`` first when given)."""
    [result] = list(transcribe_files([path], recognizer, vad, config, rate_hz, redact))
    if isinstance(result, Exception):
        raise result
    return result
