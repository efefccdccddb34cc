"""One call's transcription: its ordered frame queue, segmenter, recogniser stream and
speculative decode (:class:`CallTranscriber`). How the parts fit: :mod:`analytics.asr.service`,
which creates one per call and re-exports it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, cast

from analytics.asr.base import Hypothesis, Recognizer
from analytics.asr.decoder import BatchDecoder
from analytics.asr.frontend import FrontEnd
from analytics.asr.lag import CallLag
from analytics.asr.markers import MarkerKind, call_marker
from analytics.asr.ports import Done, LanguageOf, Redact, ServiceConfig, TranscriptSink
from analytics.asr.replay import HeldFrames
from analytics.asr.stops import Stop
from analytics.asr.vad import (
    RATE_HZ,
    ResumePoint,
    Segmenter,
    SileroVad,
    SpeechChunk,
    SpeechSegment,
    TentativeEnd,
)
from analytics.asr.vadbatch import VadBatcher
from schemas.deadletter import dead_letter
from schemas.records import AudioFrameMeta

logger = logging.getLogger(__name__)


class CallHost(Protocol):
    """What a call uses of the :class:`analytics.asr.service.TranscriptionService` it runs in:
    the shared engines, executors and sink, and the counters it adds to."""

    config: ServiceConfig
    recognizer: Recognizer
    sink: TranscriptSink
    vad: SileroVad | None
    redact: Redact
    language: LanguageOf
    clock: Callable[[], float]
    lead_in_ms: int
    decoder: BatchDecoder
    asr_executor: ThreadPoolExecutor
    vad_batcher: VadBatcher
    queued: int  # frames queued in calls, not yet processed
    published: int
    errors: int
    markers: int
    speculative_used: int
    speculative_behind: int
    partials_shed: int
    gaps: int

    def capacity_changed(self) -> None: ...

    def forget(self, session: CallTranscriber) -> None: ...


_END = object()
_CHECK_STOP = object()  # queued behind the call's frames: end now if the last one is in


class CallTranscriber:
    """All per-call ASR state: segmenter, recogniser stream, held frames, the ordered work queue.

    Owned by the analytics worker process that holds the call's audio partition (one per call,
    created by the :class:`CallHost` on the call's first frame, dropped when it ends).
    """

    def __init__(self, service: CallHost, meta: AudioFrameMeta, resume: ResumePoint) -> None:
        self.service = service
        self.call_sid = meta.call_sid
        self.stream_sid = meta.stream_sid
        self.tenant = meta.tenant
        self.campaign = meta.campaign
        self.sample_rate_hz = meta.sample_rate_hz
        self.segmenter = Segmenter(service.vad, service.config.vad, meta.offset_ms, resume)
        self.front = FrontEnd(meta.sample_rate_hz, service.config.front, RATE_HZ)
        self.language = service.language(meta.tenant, meta.campaign)  # the rules file's
        self.stream = service.recognizer.open_stream(self.language)
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.held = HeldFrames(service.lead_in_ms)
        # a decode started at the first silence: (start_ms, end_ms, result)
        self.speculative: tuple[int, int, asyncio.Future[Hypothesis]] | None = None
        self.last_speech_received_at_ms = meta.received_at_ms
        self.last_frame_at = service.clock()
        self.last_received_at_ms = meta.received_at_ms
        self.last_sequence = -1
        self.stop: Stop | None = None  # the call's stop, once read
        self.progress_ms = max(meta.offset_ms, resume.open_from_ms)
        self.resumed_ms = resume.open_from_ms  # published by a previous owner up to here
        self.ending = False
        config = service.config
        streaming = service.recognizer.streaming
        skip = config.skip_over_bound and not streaming
        self.lag = CallLag(self.call_sid, config.shed_lag_ms, config.max_lag_ms, skip)
        self.last_meta = meta
        self.partition: int | None = None
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self._run(), name=f"call-{self.call_sid}")
        self.task.add_done_callback(self._finished)

    def put(self, meta: AudioFrameMeta, pcm: bytes, done: Done) -> None:
        self.last_frame_at = self.service.clock()
        self.service.queued += 1
        self.queue.put_nowait((meta, pcm, done))

    def check_stop(self) -> None:
        """The call's stop was read: end once the frames queued before this are processed."""
        self.queue.put_nowait(_CHECK_STOP)

    def end(self) -> None:
        if not self.ending:
            self.ending = True
            self.queue.put_nowait(_END)

    async def _run(self) -> None:
        while True:
            item = await self.queue.get()
            if item is _END:
                await self._finish_call()
                self.held.release_all()
                return
            if item is _CHECK_STOP:
                if self.stop is not None and self.stop.reached(self.last_sequence):
                    self.end()
                continue
            meta, pcm, done = cast(tuple[AudioFrameMeta, bytes, Done], item)
            self.service.queued -= 1
            self.service.capacity_changed()
            self.held.hold(meta, len(pcm), done)
            try:
                await self._process(meta, pcm)
            except Exception as exc:  # noqa: BLE001 - one call's failure must not stop others
                await self._failed(meta, exc)
            if not self.segmenter.in_speech:
                await self._progress()
                self.held.release_lead_in()
            if self.stop is not None and self.stop.reached(self.last_sequence):
                self.end()  # every frame before the stop is in: flush now, no silence wait

    def _finished(self, _: object) -> None:
        """The task ended, failed or was cancelled (even before it ran: worker shutdown, a revoked
        partition): held and queued frames stay unacknowledged, so uncommitted, and free their
        capacity."""
        while not self.queue.empty():
            self.service.queued -= isinstance(self.queue.get_nowait(), tuple)
        self.service.capacity_changed()
        self.service.forget(self)

    async def _progress(self) -> None:
        position = self.segmenter.position_ms
        interval = self.service.config.progress_interval_ms
        if interval > 0 and position - self.progress_ms >= interval:
            self.progress_ms = position
            await self._publish_marker("progress")

    async def _publish_marker(self, kind: MarkerKind, gap: SpeechSegment | None = None) -> None:
        """A watermark at the call's position, or a ``gap`` for an utterance not decoded."""
        service = self.service
        marker = call_marker(
            kind,
            self.last_meta,
            audio_ms=self.segmenter.position_ms if gap is None else gap.end_ms,
            start_ms=None if gap is None else gap.start_ms,
            received_at_ms=(
                self.last_received_at_ms if gap is None else self.last_speech_received_at_ms
            ),
            produced_at_ms=int(service.clock() * 1000),
            engine=service.recognizer.engine,
            behind=self.lag.over_bound,
        )
        await service.sink.publish(marker)
        if gap is None:
            service.markers += 1
        else:
            service.gaps += 1
            self.lag.gaps += 1

    async def _process(self, meta: AudioFrameMeta, pcm: bytes) -> None:
        self.last_meta = meta
        self.last_received_at_ms = max(self.last_received_at_ms, meta.received_at_ms)
        self.last_sequence = max(self.last_sequence, meta.sequence_number)
        result = await self.service.vad_batcher.segment(
            self.segmenter, self.front, pcm, meta.sample_rate_hz
        )
        if result.had_speech:
            self.last_speech_received_at_ms = meta.received_at_ms
        if self.segmenter.position_ms > self.resumed_ms:  # a resumed call's lead-in is old
            self.lag.update(int(self.service.clock() * 1000), meta.received_at_ms)
        await self._handle(result.events)

    async def _handle(self, events: Sequence[SpeechChunk | SpeechSegment | TentativeEnd]) -> None:
        service = self.service
        loop = asyncio.get_running_loop()
        behind = self.lag.behind
        for event in events:
            if isinstance(event, TentativeEnd):
                utt = event.utterance
                if utt.keep and not service.recognizer.streaming:
                    self._drop_speculative()
                    if behind:
                        service.speculative_behind += 1
                        continue
                    future = service.decoder.speculate(self.stream, utt)  # None: shed (load)
                    if future is not None:
                        self.speculative = (utt.start_ms, utt.end_ms, future)
                continue
            if isinstance(event, SpeechChunk):
                if not service.recognizer.streaming:
                    continue
                partial = await loop.run_in_executor(
                    service.asr_executor, self.stream.accept, event.audio, event.utterance_start_ms
                )
                if partial is not None and partial.text:
                    if behind:
                        service.partials_shed += 1
                    else:
                        await self._publish(partial)
                continue
            if not event.keep:
                if service.recognizer.streaming:
                    await loop.run_in_executor(service.asr_executor, self.stream.finish, event)
                continue
            spec, self.speculative = self.speculative, None
            if spec is not None and spec[:2] == (event.start_ms, event.end_ms):
                hypothesis = await spec[2]
                service.speculative_used += 1
            else:
                if spec is not None:
                    spec[2].cancel()
                if self.lag.catching_up:
                    await self._publish_marker("gap", event)
                    continue
                # At stop the caller's last words go ahead of every other call's queued work.
                hypothesis = await service.decoder.decode(
                    self.stream, event, urgent=self.stop is not None
                )
            if hypothesis.text:
                await self._publish(hypothesis)

    def _drop_speculative(self) -> None:
        if self.speculative is not None:
            self.speculative[2].cancel()  # its batch may still run; the result is ignored
            self.speculative = None

    async def _publish(self, hyp: Hypothesis) -> None:
        service = self.service
        redaction = service.redact(self.tenant, self.campaign, hyp.text)
        now_ms = int(service.clock() * 1000)
        transcript = hyp.to_transcript(
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            tenant=self.tenant,
            campaign=self.campaign,
            text=redaction.text,
            pii_kinds=redaction.kinds,
            redacted=redaction.spans,
            engine=service.recognizer.engine,
            speech_end_at_ms=self.last_speech_received_at_ms,
            produced_at_ms=now_ms,
            behind=self.lag.over_bound,
        )
        await service.sink.publish(transcript)
        service.published += 1

    async def _failed(self, meta: AudioFrameMeta, exc: BaseException) -> None:
        logger.error("asr failed on call %s: %r; reopening its stream", self.call_sid, exc)
        self.service.errors += 1
        await self.service.sink.dead_letter(
            dead_letter(
                "asr",
                exc,
                call_sid=self.call_sid,
                stream_sid=self.stream_sid,
                occurred_at_ms=int(self.service.clock() * 1000),
            )
        )
        try:
            self.stream.close()
        finally:
            self.stream = self.service.recognizer.open_stream(self.language)
            self.segmenter = Segmenter(
                self.service.vad, self.service.config.vad, start_ms=self.segmenter.position_ms
            )

    async def _finish_call(self) -> None:
        try:
            last = self.segmenter.flush()
            if last is not None:
                await self._handle([last])
        except Exception as exc:  # noqa: BLE001 - still drop the call's state
            await self._failed(self.last_meta, exc)
        finally:
            self.stream.close()
        if self.stop is not None:
            try:
                await self._publish_marker("end")
            except Exception:  # noqa: BLE001 - Passthru then answers on its time bound
                logger.exception("end marker of call %s not published", self.call_sid)
