"""The scoring stage's faust wiring: source topic, call-state table, changelog guard, sweeper.

The logic is :class:`analytics.scoring.stage.ScoringStage`; the agent here reads batches of
final transcripts and call events, hands them to the stage and writes what it returns: scores to
``agentstream.scores`` keyed by call SID, dead letters, and the call entries to the table.

The running state lives in a faust Table (raw bytes, changelog topic ``<app id>-<table
name>-changelog``, co-partitioned with the source topics) so a restarted worker continues the
rolling figures. Embedded tansu answers ListOffsets(latest) too low, so faust's own recovery
stops short of the changelog's end and would silently lose state; :class:`ChangelogGuard`
therefore reads each newly assigned partition of the changelog itself, up to the high-water mark
reported by fetch responses (which is right on tansu and on Kafka), before the agent handles any
record of that partition. Watermark transcripts (``marker`` set: audio progress, end of call)
are not scored: :func:`marker_scores` passes each one on as a marker Score behind the scores of
the call's earlier utterances, so routing knows what of the call it has evaluated. A stopped
call's state outlives the stop by a grace period (the transcription stage still publishes the
call's last utterance after it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from analytics.app import catalogue_topic
from analytics.delivery import deliver_all
from analytics.metrics import WorkerMetrics
from analytics.scoring.engines import build_scorer
from analytics.scoring.sentiment import SentimentScorer
from analytics.scoring.settings import ScoringSettings
from analytics.scoring.stage import Clock, ScoringStage, ScoringTableEntry, SourceRecord
from schemas.records import Score, Sentiment, Transcript
from schemas.rules import RulesFile
from schemas.settings import KafkaFields
from schemas.topics import CALLS, DEADLETTER, SCORES, TRANSCRIPTS, prefixed

logger = logging.getLogger(__name__)


class ChangelogGuard:
    """Completes the call-state table from its changelog up to the true high-water mark."""

    def __init__(self, bootstrap: str, changelog: str, data: Any, timeout_s: float) -> None:
        self.bootstrap = bootstrap
        self.changelog = changelog
        self.data = data  # the table's store: a mutable mapping bytes -> bytes
        self.timeout_s = timeout_s
        self.done: set[int] = set()
        self.records_read = 0

    def forget(self, partitions: Iterable[int]) -> None:
        self.done.difference_update(partitions)

    async def ensure(self, partitions: set[int]) -> None:
        missing = partitions - self.done
        if missing:
            await self.rebuild(missing)
            self.done |= missing

    async def rebuild(self, partitions: set[int]) -> None:
        started = time.monotonic()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            group_id=None,
        )
        await consumer.start()
        try:
            # The changelog is co-partitioned with the source topics (faust creates it at start).
            tps = [TopicPartition(self.changelog, p) for p in sorted(partitions)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, 0)
            pending = set(tps)
            deadline = started + self.timeout_s
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=100, max_records=5000)
                for records in batches.values():
                    for record in records:
                        self.records_read += 1
                        if record.key is None:
                            continue
                        if record.value is None:
                            self.data.pop(record.key, None)
                        else:
                            self.data[record.key] = record.value
                for tp in list(pending):
                    highwater = consumer.highwater(tp)
                    if highwater is not None and await consumer.position(tp) >= highwater:
                        pending.discard(tp)
                if pending and time.monotonic() > deadline:
                    logger.error(
                        "call-state changelog %s not fully read within %.0f s (partitions %s); "
                        "continuing with what was read",
                        self.changelog,
                        self.timeout_s,
                        sorted(tp.partition for tp in pending),
                    )
                    break
        finally:
            await consumer.stop()
        logger.info(
            "call-state changelog partitions %s read in %.0f ms",
            sorted(partitions),
            (time.monotonic() - started) * 1000,
        )


_NEUTRAL = Sentiment(score=0.0, label="neutral", confidence=0.0, engine="")


def marker_scores(
    records: Sequence[SourceRecord],
    transcripts_topic: str,
    entries: dict[bytes, tuple[ScoringTableEntry, int]],
    load: Callable[[bytes, int], ScoringTableEntry],
    now_ms: int,
) -> list[Score]:
    """The batch's watermark transcripts as marker Scores (in order), with the call's state.

    Sent after the batch's scores, so a marker never overtakes an utterance it covers. A ``gap``
    marker (an utterance not transcribed) also counts in the call's state
    (``untranscribed_utterances``, once: a replayed gap is recognised as an utterance is);
    ``entries`` then holds the call's entry, to be saved.
    """
    out: list[Score] = []
    for record in records:
        if record.topic != transcripts_topic or b'"marker":"' not in record.value:
            continue
        try:
            marker = Transcript.model_validate(orjson.loads(record.value))
        except (ValueError, ValidationError):
            continue  # the stage dead-letters what it cannot read
        if marker.marker is None:
            continue
        key = marker.call_sid.encode()
        known = entries.get(key)
        entry = known[0] if known else load(key, record.partition)
        if marker.marker == "gap" and not entry.is_replay(marker):
            # an utterance heard but not transcribed (the ASR stage was over its backlog
            # bound): the call's figures miss it, and everything decided from them says so
            entry.mark(marker)
            count = entry.state.untranscribed_utterances + 1
            entry.state = entry.state.model_copy(update={"untranscribed_utterances": count})
            entry.updated_at_ms = now_ms
            entries.setdefault(key, (entry, record.partition))
        out.append(
            Score(
                call_sid=marker.call_sid,
                stream_sid=marker.stream_sid,
                tenant=marker.tenant,
                campaign=marker.campaign,
                utterance_id=marker.utterance_id,
                utterance_index=marker.utterance_index,
                text="",
                start_ms=marker.start_ms,
                end_ms=marker.end_ms,
                sentiment=_NEUTRAL,
                state=entry.state,
                speech_end_at_ms=marker.speech_end_at_ms,
                transcript_at_ms=marker.produced_at_ms,
                scored_at_ms=now_ms,
                latency_ms=float(max(0, now_ms - marker.produced_at_ms)),
                marker=marker.marker,
                behind=marker.behind,
            )
        )
    return out


def attach_scoring(
    app: faust.App,
    *,
    settings: ScoringSettings,
    kafka: KafkaFields,
    rules: RulesFile,
    scorer: SentimentScorer | None = None,
    clock: Clock = time.time,
    redacted_upstream: bool = False,
    metrics: WorkerMetrics | None = None,
) -> ScoringStage:
    """Register the scoring agent, its call-state table and sweeper on ``app``.

    ``scorer`` overrides the configured engine (tests pass a fake); the configured one is loaded
    here, before the worker starts. ``redacted_upstream``: the transcripts were redacted by this
    worker's ASR stage with the same rules. Returns the stage (for metrics and tests).
    """
    stage = ScoringStage(
        settings,
        rules,
        scorer or build_scorer(settings),
        clock,
        redacted_upstream=redacted_upstream,
    )
    prefix = kafka.topic_prefix
    transcripts_name = prefixed(TRANSCRIPTS, prefix)
    calls_name = prefixed(CALLS, prefix)
    source = app.topic(
        transcripts_name,
        calls_name,
        key_serializer="raw",
        value_serializer="raw",
        partitions=TRANSCRIPTS.partitions,
        internal=False,
    )
    scores_topic = catalogue_topic(app, SCORES, prefix)
    deadletter_topic = catalogue_topic(app, DEADLETTER, prefix)
    table = app.Table(
        settings.table_name,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=TRANSCRIPTS.partitions,
    )
    guard = ChangelogGuard(
        kafka.bootstrap_servers,
        table.changelog_topic.get_topic_name(),
        table.data,
        settings.recovery_timeout_s,
    )

    async def on_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        guard.forget(tp.partition for tp in revoked if tp.topic in (transcripts_name, calls_name))

    app.on_partitions_revoked.connect(on_revoked)

    def load(key: bytes, partition: int) -> ScoringTableEntry:
        raw = table.data.get(key)
        if raw is None:
            return ScoringTableEntry(partition=partition)
        try:
            return ScoringTableEntry.from_bytes(raw)
        except (ValueError, ValidationError, KeyError):
            logger.exception("unreadable call state for %r; starting afresh", key)
            return ScoringTableEntry(partition=partition)

    async def handle(events: list[Any]) -> None:
        if not events:
            return
        partitions = {e.message.partition for e in events}
        if partitions - guard.done:
            await app.producer.flush()
            assigned = {
                tp.partition
                for tp in app.consumer.assignment()
                if tp.topic in (transcripts_name, calls_name)
            }
            await guard.ensure(partitions | assigned)
        records = [
            SourceRecord(m.topic, m.partition, m.offset, m.key, m.value or b"")
            for m in (e.message for e in events)
        ]
        out = await stage.handle(records, transcripts_name, load)
        passed = marker_scores(records, transcripts_name, out.entries, load, stage.now_ms())
        # Until these are acknowledged the batch's events stay unacked (nothing committed).
        await deliver_all(
            [
                *(
                    (
                        deadletter_topic,
                        letter.call_sid.encode() if letter.call_sid else None,
                        letter.to_bytes(),
                    )
                    for letter in out.dead_letters
                ),
                *(
                    (scores_topic, s.call_sid.encode(), s.to_bytes())
                    for s in [*out.scores, *passed]
                ),
            ]
        )
        if metrics is not None:
            for letter in out.dead_letters:
                metrics.deadletters.labels(letter.stage).inc()
            for score in out.scores:
                metrics.scores.inc()
                metrics.score_latency.observe(score.latency_ms / 1000)
        for key, (entry, partition) in out.entries.items():
            entry.partition = partition
            value = entry.to_bytes()
            table.data[key] = value
            table.send_changelog(partition, key, value)

    @app.agent(source, name=f"{settings.table_name}-scoring")  # type: ignore[misc,untyped-decorator]
    async def scoring_agent(stream: Any) -> None:
        async for events in stream.take_events(
            settings.batch_max_size, within=settings.batch_max_wait_ms / 1000.0
        ):
            await handle(list(events))

    @app.timer(interval=settings.sweep_interval_s)  # type: ignore[misc,untyped-decorator]
    async def sweep_call_states() -> None:
        now = stage.now_ms()
        for key, raw in list(table.data.items()):
            try:
                entry = ScoringTableEntry.from_bytes(raw)
            except (ValueError, ValidationError, KeyError):
                entry = ScoringTableEntry()
            if stage.expired(entry, now):
                table.data.pop(key, None)
                table.send_changelog(entry.partition, key, None)

    return stage
