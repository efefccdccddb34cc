"""The transcription engine of the worker: per-call sessions, VAD, batched decoding, publishing.

Plain asyncio (no faust): :mod:`analytics.worker` only routes records here; tested with fakes.

* Each call has a :class:`CallTranscriber` with its own queue and task: a call's frames are
  processed in order, calls are independent.
* Frame -> front end (:mod:`analytics.asr.frontend`) -> VAD (energy gate first: silence is nearly
  free) runs in a small executor; streaming recognisers get speech chunks in the inference one.
* Utterance ends from all calls go to one :class:`analytics.asr.decoder.BatchDecoder`: when
  an inference thread is free it takes every waiting utterance (up to ``max_batch``) into one
  ``finish_batch`` call.
* Speculative decode: after ``early_end_ms`` of silence a batch recogniser starts decoding the
  utterance as it would be cut; if the silence lasts to ``min_silence_ms`` that is the final
  result (same audio), the decode hidden behind the end-of-speech wait; else it is discarded.
* A frame is reported done (its offset may be committed) only once every transcript it
  contributed to is published and it ends a lead-in before the call's position: a replay then
  cuts the same utterances, so the same ids (:mod:`analytics.asr.replay`).
* ``stop`` ends a session once the frame just before the stop's sequence number is processed
  (else after a grace, which waits while the call's partition is read again:
  :mod:`analytics.asr.stops`): the open utterance is cut without waiting for silence, decoded
  ahead of every other call's queued work, published, then an ``end`` marker
  (:mod:`analytics.asr.markers`). An idle timeout also ends a session (no marker without a
  stop). Per-call state is then dropped.
* While the caller is silent a ``progress`` marker is published every ``progress_interval_ms``
  of audio: downstream time is the call's audio time.
* A recogniser error on one call is dead-lettered; its stream is reopened, other calls go on.
* A call's recogniser stream is opened in its tenant and campaign's language (``language``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, cast

from analytics.asr import ports
from analytics.asr.base import Hypothesis, Recognizer
from analytics.asr.decoder import BatchDecoder, WarmUpBarrier
from analytics.asr.frontend import FrontEnd
from analytics.asr.markers import call_marker
from analytics.asr.ports import Done, Redact, Rereading, ServiceConfig, TranscriptSink
from analytics.asr.replay import HeldFrames, lead_in_ms
from analytics.asr.stops import Stop, Stops
from analytics.asr.vad import (
    RATE_HZ,
    ResumePoint,
    Segmenter,
    SegmentResult,
    SileroVad,
    SpeechChunk,
    SpeechSegment,
    TentativeEnd,
)
from schemas.deadletter import dead_letter
from schemas.records import AudioFrameMeta

__all__ = ["ServiceConfig", "TranscriptionService", "CallTranscriber", "TranscriptSink"]

logger = logging.getLogger(__name__)

_END = object()
_CHECK_STOP = object()  # queued behind the call's frames: end now if the last one is in


class CallTranscriber:
    """All per-call ASR state: segmenter, recogniser stream, held frames, the ordered work queue.

    Owned by the analytics worker process that holds the call's audio partition (one per call,
    created by :class:`TranscriptionService` on the call's first frame, dropped when it ends).
    """

    def __init__(
        self, service: TranscriptionService, meta: AudioFrameMeta, resume: ResumePoint
    ) -> None:
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
        self.ending = False
        self.last_meta = meta
        self.partition: int | None = None
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self._run(), name=f"call-{self.call_sid}")
        self.task.add_done_callback(self._finished)

    def put(self, meta: AudioFrameMeta, pcm: bytes, done: Done) -> None:
        self.last_frame_at = self.service.clock()
        self.service.queued += 1
        self.queue.put_nowait((meta, pcm, done))

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

    def _segment(self, pcm: bytes, rate_hz: int) -> SegmentResult:
        return self.segmenter.feed(self.front.process(pcm, rate_hz))

    async def _progress(self) -> None:
        position = self.segmenter.position_ms
        interval = self.service.config.progress_interval_ms
        if interval > 0 and position - self.progress_ms >= interval:
            self.progress_ms = position
            await self._publish_marker("progress")

    async def _publish_marker(self, kind: Literal["progress", "end"]) -> None:
        service = self.service
        marker = call_marker(
            kind,
            self.last_meta,
            audio_ms=self.segmenter.position_ms,
            received_at_ms=self.last_received_at_ms,
            produced_at_ms=int(service.clock() * 1000),
            engine=service.recognizer.engine,
        )
        await service.sink.publish(marker)
        service.markers += 1

    async def _process(self, meta: AudioFrameMeta, pcm: bytes) -> None:
        self.last_meta = meta
        self.last_received_at_ms = max(self.last_received_at_ms, meta.received_at_ms)
        self.last_sequence = max(self.last_sequence, meta.sequence_number)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self.service.vad_executor, self._segment, pcm, meta.sample_rate_hz
        )
        if result.had_speech:
            self.last_speech_received_at_ms = meta.received_at_ms
        await self._handle(result.events)

    async def _handle(self, events: Sequence[SpeechChunk | SpeechSegment | TentativeEnd]) -> None:
        service = self.service
        loop = asyncio.get_running_loop()
        for event in events:
            if isinstance(event, TentativeEnd):
                utt = event.utterance
                if utt.keep and not service.recognizer.streaming:
                    self._drop_speculative()
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


class TranscriptionService:
    """Routes frames to per-call sessions; owns the executors and the batch decoder."""

    def __init__(
        self,
        recognizer: Recognizer,
        sink: TranscriptSink,
        config: ServiceConfig | None = None,
        vad: SileroVad | None = None,
        redact: Redact = ports.no_redaction,
        language: ports.LanguageOf = ports.configured_language,
        clock: Callable[[], float] = time.time,
        rereading: Rereading = ports.never_rereading,
    ) -> None:
        self.recognizer = recognizer
        self.sink = sink
        self.config = config or ServiceConfig()
        self.vad = vad
        self.redact = redact
        self.language = language
        self.clock = clock
        self.sessions: dict[str, CallTranscriber] = {}
        self.asr_executor = ThreadPoolExecutor(
            max_workers=self.config.executor_workers, thread_name_prefix="asr"
        )
        self.vad_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vad")
        self.lead_in_ms = lead_in_ms(self.config.front, self.config.vad, vad is not None)
        self.decoder = BatchDecoder(
            recognizer,
            self.asr_executor,
            self.config.executor_workers,
            self.config.batch_wait_ms / 1000.0,
        )
        # counters: frames queued; transcripts, errors and markers published; calls; decodes
        self.queued = self.published = self.errors = self.markers = 0
        self.calls_started = self.calls_ended = 0
        self.speculative_used = 0  # speculative decodes whose result was the final one
        self.ready = False
        config = self.config
        self.stops = Stops(config.stop_grace_s, config.idle_timeout_s, rereading)
        self._capacity = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load one model per inference thread (in those threads), then start the batcher."""
        self._capacity.set()
        loop = asyncio.get_running_loop()
        barrier = WarmUpBarrier(self.config.executor_workers)
        await asyncio.gather(
            *(
                loop.run_in_executor(self.asr_executor, barrier.run, self.recognizer.warm_up)
                for _ in range(self.config.executor_workers)
            )
        )
        self.decoder.start()
        self._sweeper = loop.create_task(self._sweep(), name="asr-sweeper")
        self.ready = True

    async def stop(self, flush: bool = False) -> None:
        """Stop the executors; ``flush`` first ends every call (publishing open utterances).

        A worker shutting down does not flush: the open utterances' frames are not committed,
        so the worker that takes the partition over transcribes them once, from the start.
        """
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        sessions = list(self.sessions.values())
        for session in sessions:
            if flush:
                session.end()
            else:
                session.task.cancel()
        tasks = [s.task for s in sessions]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.decoder.stop()
        self.asr_executor.shutdown(wait=True)
        self.vad_executor.shutdown(wait=True)

    def on_frame(
        self,
        meta: AudioFrameMeta,
        pcm: bytes,
        done: Done,
        partition: int | None = None,
        resume: ResumePoint | None = None,
    ) -> None:
        """Queue one audio frame for its call (never blocks); ``partition``: its source;
        ``resume``: where a call resumed by this frame stands (:mod:`analytics.asr.progress`)."""
        if meta.track == "outbound":
            done()  # the bot's/agent's side (media.track): kept in the topic, not the caller
            return
        session = self.sessions.get(meta.call_sid)
        if session is None or session.ending:
            # A frame after the call ended (a re-read's tail): a fresh session picks the call up
            # again, with the call's stop if one was read (:mod:`analytics.asr.stops`).
            ended = None if session is None else session.stop
            session = CallTranscriber(self, meta, resume or ResumePoint())
            self.sessions[meta.call_sid] = session
            self.calls_started += 1
            kept = self.stops.take(meta.call_sid)
            session.stop = kept or (None if ended is None else Stop(ended.sequence))
        session.partition = partition
        session.put(meta, pcm, done)

    def drop_partitions(self, partitions: set[int]) -> int:
        """Partitions went to another worker: drop their calls without publishing anything.

        Their unfinished frames were not committed, so the new owner transcribes them; flushing
        here would publish a truncated duplicate.
        """
        dropped = 0
        for session in list(self.sessions.values()):
            if session.partition in partitions:
                session.task.cancel()
                self.sessions.pop(session.call_sid, None)
                dropped += 1
        return dropped

    def on_stop(
        self, call_sid: str, sequence_number: int | None = None, acked: Done | None = None
    ) -> None:
        """The call's ``stop`` (calls topic): its session ends once the frame before
        ``sequence_number`` is in (audio may lag), else after a grace; then ``acked`` (.stops)."""
        session = self.sessions.get(call_sid)
        if session is None or session.ending:
            self.stops.keep(call_sid, Stop(sequence_number, acked=acked), self.clock())
            return
        session.stop = Stop(sequence_number, acked=acked).instead_of(session.stop)
        session.last_frame_at = min(session.last_frame_at, self.clock())
        if sequence_number is not None:
            session.queue.put_nowait(_CHECK_STOP)

    def forget(self, session: CallTranscriber) -> None:
        if self.sessions.get(session.call_sid) is session:
            del self.sessions[session.call_sid]
            if session.stop is not None:  # for frames still to come (a re-read's tail)
                self.stops.keep(session.call_sid, Stop(session.stop.sequence), self.clock())
        if session.stop is not None:  # also when a tail's session already took its place
            session.stop.ack()  # its call's end is out
        self.calls_ended += 1
        at = (session.segmenter.position_ms, session.last_sequence, len(self.sessions))
        logger.info("call %s ended at %d ms of audio (frame %d); %d active", session.call_sid, *at)

    def capacity_changed(self) -> None:
        if self.queued < self.config.max_queued_frames:
            self._capacity.set()

    async def wait_capacity(self) -> None:
        """Backpressure for the consumer: wait while too many frames are queued."""
        if self.queued >= self.config.max_queued_frames:
            self._capacity.clear()
            await self._capacity.wait()

    def sweep(self) -> None:
        """End stopped calls after their grace and calls idle past the timeout."""
        now = self.clock()
        self.stops.expire(now)
        for session in list(self.sessions.values()):
            if self.stops.due(session, now):
                session.end()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            self.sweep()
