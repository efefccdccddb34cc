"""The analytics worker process: the faust app and its wiring (the ASR agents, and scoring).

The logic lives in :mod:`analytics.asr.service` and :mod:`analytics.scoring`; this module only
connects them to faust topics, acknowledgements and dead letters.

``build_worker(settings)`` returns the app with every agent registered; ``agentstream worker``
runs it. Several processes with the same ``app_id`` share the topics' partitions.

Offsets: the audio agent reads without faust's automatic acks; each frame is acknowledged once
the transcription service reports it done (after the transcripts it contributed to were
published), and acknowledgements are released to faust in offset order per partition
(:class:`OffsetTracker`), so a commit never passes an unfinished frame and a killed worker's
successor resumes a lead-in before every open utterance (:mod:`analytics.asr.replay`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from faust.types import TP
from pydantic import ValidationError

from analytics.app import catalogue_topic, make_app
from analytics.asr.base import AsrError, Recognizer
from analytics.asr.engines import load_recognizer
from analytics.asr.frontend import FrontEndConfig
from analytics.asr.ports import LanguageOf, Redact, Redaction, Rereading, ServiceConfig
from analytics.asr.progress import CallProgress
from analytics.asr.service import TranscriptionService
from analytics.asr.vad import SileroVad, VadConfig
from analytics.asr.whisper import unsupported_languages
from analytics.backlog import AudioBacklog, BacklogCollector
from analytics.contiguity import Contiguity
from analytics.delivery import deliver
from analytics.heartbeat import HeartbeatState
from analytics.metrics import DecodeCollector, WorkerMetrics
from analytics.resume import ProgressLoader
from analytics.scoring.agent import attach_scoring
from analytics.scoring.redact import Redactor
from analytics.settings import WorkerSettings
from schemas.cache import LruCache
from schemas.deadletter import Source, dead_letter
from schemas.records import AudioFrameMeta, CallEvent, DeadLetter, Transcript
from schemas.rules import RulesFile, default_rules, parse_rules
from schemas.topics import AUDIO, CALLS, DEADLETTER, TRANSCRIPTS, WORKERS, prefixed

logger = logging.getLogger(__name__)

REREAD_AFTER_S = 1.0  # a partition re-read that has not started within this is asked again


@dataclass
class _Entry:
    offset: int
    event: Any
    done: bool = False
    read_at_s: float = 0.0


@dataclass
class OffsetTracker:
    """Acknowledges events to faust in offset order per partition, whatever order they finish.

    Per-partition (not per-call) state of the analytics worker process; revoked partitions are
    forgotten.
    """

    pending: dict[tuple[str, int], deque[_Entry]] = field(default_factory=dict)

    def add(
        self, topic: str, partition: int, offset: int, event: Any, read_at_s: float = 0.0
    ) -> Callable[[], None]:
        queue = self.pending.setdefault((topic, partition), deque())
        entry = _Entry(offset, event, read_at_s=read_at_s)
        queue.append(entry)

        def done() -> None:
            entry.done = True
            while queue and queue[0].done:
                queue.popleft().event.ack()

        return done

    def forget(self, topic: str, partition: int) -> None:
        self.pending.pop((topic, partition), None)

    @property
    def unacked(self) -> int:
        return sum(len(q) for q in self.pending.values())

    def oldest_read_at_s(self) -> float | None:
        """When the oldest frame still unacknowledged was read (None when none is)."""
        heads = [q[0].read_at_s for q in self.pending.values() if q]
        return min(heads) if heads else None


def load_rules(settings: WorkerSettings) -> RulesFile:
    if settings.rules_path is None:
        return default_rules()
    return parse_rules(settings.rules_path.read_text(encoding="utf-8"), str(settings.rules_path))


def make_redactor(rules: RulesFile) -> Redact:
    """PII redaction per tenant/campaign (``redact_pii`` in the rules file, on by default)."""
    on, off = Redactor(enabled=True), Redactor(enabled=False)
    cache: LruCache[tuple[str, str], Redactor] = LruCache(512)  # tenants come from the input

    def redact(tenant: str, campaign: str, text: str) -> Redaction:
        redactor = cache.get_or_make(
            (tenant, campaign), lambda: on if rules.resolve(tenant, campaign).redact_pii else off
        )
        return Redaction(*redactor.redact_spans(text))

    return redact


def make_language(rules: RulesFile, settings: WorkerSettings) -> LanguageOf:
    """The callers' language per tenant/campaign (``language`` in the rules file; unset: the
    recogniser's ``whisper_language``). Whisper refuses, at start-up, a code it does not know."""
    if settings.asr_engine == "whisper":
        bad = unsupported_languages({*rules.languages(), settings.whisper_language})
        if bad:
            raise AsrError(f"Whisper knows no language {', '.join(map(repr, bad))} (rules file)")

    def language(tenant: str, campaign: str) -> str | None:
        return rules.resolve(tenant, campaign).language

    return language


class FaustSink:
    """Publishes to the transcripts / dead-letter topics; returns once the broker acked
    (a failed send is retried until it is, :mod:`analytics.delivery`)."""

    def __init__(self, transcripts: Any, deadletter: Any, metrics: WorkerMetrics) -> None:
        self.transcripts = transcripts
        self.deadletter = deadletter
        self.metrics = metrics

    async def publish(self, transcript: Transcript) -> None:
        await deliver(self.transcripts, transcript.call_sid.encode(), transcript.to_bytes())
        self.metrics.transcripts.labels("final" if transcript.is_final else "partial").inc()
        if transcript.is_final:
            self.metrics.transcript_latency.observe(transcript.latency_ms / 1000)

    async def dead_letter(self, record: DeadLetter) -> None:
        self.metrics.deadletters.labels(record.stage).inc()
        key = record.call_sid.encode() if record.call_sid else None
        await deliver(self.deadletter, key, record.to_bytes())


def partition_rereading(topic: str, order: Contiguity, consumer: Callable[[], Any]) -> Rereading:
    """Whether an audio partition is being read again, as the agent's offset check
    (:class:`Contiguity`) or the consumer (:class:`analytics.gapless.GaplessMixin`) knows it:
    a stopped call on it waits for its late frames (:mod:`analytics.asr.stops`)."""

    def rereading(partition: int) -> bool:
        tp = TP(topic, partition)
        return order.waiting(tp) or bool(consumer().rereading(tp))

    return rereading


@dataclass
class Worker:
    app: faust.App
    service: TranscriptionService
    tracker: OffsetTracker
    rules: RulesFile
    metrics: WorkerMetrics
    scoring: Any = None
    heartbeat: HeartbeatState | None = None
    backlog: AudioBacklog = field(default_factory=AudioBacklog)
    progress: CallProgress | None = None


def service_config(settings: WorkerSettings) -> ServiceConfig:
    return ServiceConfig(
        vad=VadConfig(
            threshold=settings.vad_threshold,
            min_silence_ms=settings.vad_min_silence_ms,
            speech_pad_ms=settings.vad_speech_pad_ms,
            min_speech_ms=settings.vad_min_speech_ms,
            energy_floor_dbfs=settings.vad_energy_floor_dbfs,
            max_utterance_ms=settings.max_utterance_ms,
            early_end_ms=settings.vad_early_end_ms,
        ),
        front=FrontEndConfig(
            resampler=settings.resampler,
            agc=settings.agc,
            agc_target_dbfs=settings.agc_target_dbfs,
            agc_max_gain_db=settings.agc_max_gain_db,
        ),
        executor_workers=settings.executor_workers,
        idle_timeout_s=settings.call_idle_timeout_s,
        stop_grace_s=settings.stop_grace_s,
        sweep_interval_s=settings.idle_sweep_interval_s,
        batch_wait_ms=settings.whisper_batch_wait_ms if settings.asr_engine == "whisper" else 0,
        vad_batch_wait_ms=settings.vad_batch_wait_ms,
        progress_interval_ms=settings.progress_interval_ms,
        shed_lag_ms=int(settings.asr_shed_lag_s * 1000),
        max_lag_ms=int(settings.asr_max_lag_s * 1000),
        skip_over_bound=settings.asr_skip_over_bound,
    )


def build_worker(
    settings: WorkerSettings,
    *,
    recognizer: Recognizer | None = None,
    vad: SileroVad | None = None,
    use_vad_model: bool = True,
    with_scoring: bool | None = None,
    clock: Callable[[], float] = time.time,
    idempotent: bool = False,
) -> Worker:
    """The worker's app with the transcription agents (and scoring, when available).

    ``recognizer`` overrides the configured engine (tests pass a fake); ``use_vad_model=False``
    replaces Silero by the energy gate alone (tests with synthetic audio).
    """
    app = make_app(settings, idempotent)
    rules = load_rules(settings)
    prefix = settings.topic_prefix
    audio_topic = catalogue_topic(app, AUDIO, prefix)
    calls_topic = catalogue_topic(app, CALLS, prefix)
    metrics = WorkerMetrics()
    sink = FaustSink(
        catalogue_topic(app, TRANSCRIPTS, prefix),
        catalogue_topic(app, DEADLETTER, prefix),
        metrics,
    )
    audio_name = prefixed(AUDIO, prefix)
    calls_name = prefixed(CALLS, prefix)
    order = Contiguity()  # the agent sees each audio partition's offsets in order
    service = TranscriptionService(
        recognizer or load_recognizer(settings),
        sink,
        service_config(settings),
        vad=(vad or SileroVad(model=settings.vad_model)) if use_vad_model else None,
        redact=make_redactor(rules),
        language=make_language(rules, settings),
        clock=clock,
        rereading=partition_rereading(audio_name, order, lambda: app.consumer),
    )
    tracker = OffsetTracker()
    stops_tracker = OffsetTracker()  # the calls topic's: not in the lag below
    # the gauges and the episode's log lines at the service's shed lag and bound
    shed_s, bound_s = settings.asr_shed_lag_s or 2.0, settings.asr_max_lag_s or 10.0
    backlog = AudioBacklog(clock, behind_s=shed_s, warn_s=bound_s)
    metrics.registry.register(BacklogCollector(backlog))
    metrics.registry.register(DecodeCollector(lambda: decode_counts(service)))
    worker = Worker(app, service, tracker, rules, metrics, backlog=backlog)

    def lag_s() -> float:
        # frames held for a replay's lead-in are transcribed: not lag
        oldest = tracker.oldest_read_at_s()
        lead_in_s = service.lead_in_ms / 1000
        return 0.0 if oldest is None else max(0.0, clock() - oldest - lead_in_s)

    metrics.watch(
        active_calls=lambda: len(service.sessions),
        backlog_frames=lambda: service.queued,
        lag_seconds=lag_s,
    )
    # Per-call progress: a worker taking a partition over skips each call's published audio.
    progress = CallProgress(lead_in_ms=service.lead_in_ms)
    loader = ProgressLoader(settings.bootstrap_servers, prefixed(TRANSCRIPTS, prefix), progress)
    worker.progress = progress

    async def on_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        order.forget(tp for tp in revoked if tp.topic == audio_name)
        partitions = {tp.partition for tp in revoked if tp.topic == audio_name}
        loader.forget(partitions)
        for partition in partitions:
            tracker.forget(audio_name, partition)
        for tp in revoked:
            if tp.topic == calls_name:
                stops_tracker.forget(calls_name, tp.partition)
        if partitions:
            dropped = service.drop_partitions(partitions)
            logger.info("partitions %s revoked: dropped %d calls", sorted(partitions), dropped)

    app.on_partitions_revoked.connect(on_revoked)

    @app.timer(interval=REREAD_AFTER_S / 2)  # type: ignore[untyped-decorator]
    async def reread_overdue() -> None:
        """A re-read that has not come is asked again (see :mod:`analytics.contiguity`)."""
        for tp, want in order.overdue(clock(), REREAD_AFTER_S):
            tp_: Any = tp
            logger.warning(
                "audio partition %d: offset %d not read yet: asking again", tp_.partition, want
            )
            await app.consumer.seek_in_thread(tp, want)

    worker.heartbeat = _attach_heartbeat(app, settings, service)

    @app.agent(audio_topic, name="agentstream-asr")  # type: ignore[untyped-decorator]
    async def transcribe_audio(stream: Any) -> None:
        await service.start()
        try:
            async for event in stream.noack().events():
                message = event.message
                if not order.started(message.tp):  # first record since the assignment
                    order.begin(message.tp, await app.consumer.broker_start_offset(message.tp))
                verdict, want = order.check(message.tp, message.offset, now=clock())
                if verdict != "ok":
                    if verdict == "gap":  # faust took records it never passed on: again
                        logger.warning(
                            "audio partition %d: got offset %d, expected %d: reading again",
                            *(message.partition, message.offset, want),
                        )
                        await app.consumer.seek_in_thread(message.tp, want)
                    continue  # not processed (and not acknowledged): it comes again in order
                done = tracker.add(
                    message.topic, message.partition, message.offset, event, read_at_s=clock()
                )
                metrics.frames.inc()
                try:
                    meta = AudioFrameMeta.from_headers(list(message.headers or []))
                except (ValidationError, UnicodeDecodeError, AttributeError) as exc:
                    await sink.dead_letter(
                        dead_letter(
                            "asr",
                            f"bad audio frame headers: {exc}",
                            raw=message.value,
                            call_sid=message.key,
                            source=Source(message.topic, message.partition, message.offset),
                            occurred_at_ms=int(clock() * 1000),
                        )
                    )
                    done()
                    continue
                backlog.observe(meta.call_sid, meta.received_at_ms)
                pcm = bytes(message.value or b"")
                if message.partition not in loader.done:
                    logger.info(
                        "audio partition %d: reading from offset %d",
                        message.partition,
                        message.offset,
                    )
                    await loader.ensure({message.partition})
                resume = None
                if meta.call_sid not in service.sessions:
                    if progress.already_done(meta, len(pcm)):
                        done()  # published before a restart or rebalance: resume after it
                        continue
                    resume = progress.resume_point(meta.call_sid)
                    logger.info(
                        "call %s: audio from %d ms (partition %d offset %d, published to %s ms)",
                        meta.call_sid,
                        meta.offset_ms,
                        message.partition,
                        message.offset,
                        progress.marker(meta.call_sid),
                    )
                service.on_frame(meta, pcm, done, message.partition, resume)
                await service.wait_capacity()
        finally:
            await service.stop()

    @app.agent(calls_topic, name="agentstream-asr-calls")  # type: ignore[untyped-decorator]
    async def call_events(stream: Any) -> None:
        # A stop is acknowledged (its offset committed) only once its call's session has ended:
        # a successor reading the call's audio again then reads its stop again too.
        async for record in stream.noack().events():
            message = record.message
            done = stops_tracker.add(message.topic, message.partition, message.offset, record)
            try:
                event = CallEvent.model_validate(orjson.loads(record.value))
            except (ValidationError, orjson.JSONDecodeError) as exc:
                logger.warning("ignoring a bad call event: %s", exc)
                done()
                continue
            if event.kind != "stop":
                done()
                continue
            service.on_stop(event.call_sid, event.sequence_number, acked=done)
            backlog.forget(event.call_sid)

    enabled = settings.scoring.enabled if with_scoring is None else with_scoring
    if enabled:
        # The ASR stage above redacts every transcript with these rules: scoring does not again.
        worker.scoring = attach_scoring(
            app,
            settings=settings.scoring,
            kafka=settings,
            rules=rules,
            redacted_upstream=True,
            metrics=metrics,
        )
    return worker


def decode_counts(service: TranscriptionService) -> dict[str, int]:
    decoder = service.decoder
    return {
        "batches": decoder.batches,
        "decoded": decoder.decoded,
        "speculative_started": decoder.speculative_started,
        "speculative_used": service.speculative_used,
        "speculative_shed": decoder.speculative_shed,
        "speculative_behind": service.speculative_behind,
        "partials_shed": service.partials_shed,
        "gaps": service.gaps,
        "over_bound": sum(1 for call in service.sessions.values() if call.lag.over_bound),
        "vad_batches": service.vad_batcher.batches,
        "vad_frames": service.vad_batcher.frames,
    }


def _attach_heartbeat(
    app: faust.App, settings: WorkerSettings, service: TranscriptionService
) -> HeartbeatState:
    """Send this worker's heartbeat to ``agentstream.workers`` every ``heartbeat_interval_s``."""
    audio_name = prefixed(AUDIO, settings.topic_prefix)
    topic = catalogue_topic(app, WORKERS, settings.topic_prefix)
    state = HeartbeatState(
        settings.client_id,
        settings.app_id,
        AUDIO.partitions,
        settings.heartbeat_interval_s,
        lambda: service.ready,
    )

    def current() -> list[int]:
        return [tp.partition for tp in app.consumer.assignment() if tp.topic == audio_name]

    async def on_assigned(sender: Any, assigned: set[Any], **_: Any) -> None:
        state.on_assignment(current())

    app.on_partitions_assigned.connect(on_assigned)

    @app.timer(interval=settings.heartbeat_interval_s)  # type: ignore[untyped-decorator]
    async def send_heartbeat() -> None:
        if state.assigned:
            state.on_assignment(current())
        record = state.record()
        await topic.send(key=record.worker_id.encode(), value=record.to_bytes())

    return state
