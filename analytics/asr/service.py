"""The transcription engine of the worker: per-call sessions, VAD, batched decoding, publishing.

Plain asyncio (no faust): :mod:`analytics.worker` only routes records here; tested with fakes.

* Each call has a :class:`CallTranscriber` with its own queue and task: a call's frames are
  processed in order, calls are independent.
* Frame -> front end (:mod:`analytics.asr.frontend`) -> VAD (energy gate first: silence is nearly
  free) runs in one thread, the frames of every call waiting for it in one batch
  (:mod:`analytics.asr.vadbatch`); streaming recognisers get speech chunks in the inference one.
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
* Backlog, bounded (:mod:`analytics.asr.lag`): a call far behind real time sheds speculative
  decodes and partials, and past the bound publishes its utterances as ``gap`` markers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from analytics.asr import ports
from analytics.asr.base import Recognizer
from analytics.asr.call import CallTranscriber
from analytics.asr.decoder import BatchDecoder, WarmUpBarrier
from analytics.asr.ports import Done, Redact, Rereading, ServiceConfig, TranscriptSink
from analytics.asr.replay import lead_in_ms
from analytics.asr.stops import Stop, Stops
from analytics.asr.vad import ResumePoint, SileroVad
from analytics.asr.vadbatch import VadBatcher
from schemas.records import AudioFrameMeta

__all__ = ["ServiceConfig", "TranscriptionService", "CallTranscriber", "TranscriptSink"]

logger = logging.getLogger(__name__)


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
        # every call's VAD, batched
        self.vad_batcher = VadBatcher(self.vad_executor, self.config.vad_batch_wait_ms / 1000)
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
        # shed for backlog: speculative decodes not started, partials not published, and
        # utterances published as gaps (not decoded)
        self.speculative_behind = self.partials_shed = self.gaps = 0
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
        vad = self.vad_batcher
        if vad.batches:
            logger.info(
                "VAD: %d frames in %d batches (mean %.2f)",
                *(vad.frames, vad.batches, vad.frames / vad.batches),
            )
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
            session.check_stop()

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
