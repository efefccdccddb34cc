"""The scoring stage: a faust agent from final transcripts (and call events) to score records.

For each final transcript: redact (defensively; the transcription stage already did), score the
sentiment (micro-batched with every other transcript that arrived in the same ~10 ms, in an
executor), spot keywords with the tenant/campaign's categories, fold into the call's running state
and publish a :class:`schemas.records.Score` to ``agentstream.scores`` keyed by call SID. Call
events fold in too: ``start`` stamps the start time, ``dtmf`` the last digit, ``stop`` marks the
state for removal after a grace period (the transcription stage still publishes the call's last
utterance after the stop, so the state must outlive it briefly).

The running state lives in a faust Table (raw bytes, changelog topic
``<app id>-<table name>-changelog``, co-partitioned with the source topics) so a restarted worker
continues the rolling figures. Embedded tansu answers ListOffsets(latest) too low, so faust's own
recovery stops short of the changelog's end and would silently lose state; :class:`ChangelogGuard`
therefore reads each newly assigned partition of the changelog itself, up to the high-water mark
reported by fetch responses (which is right on tansu and on Kafka), before the agent handles any
record of that partition. Replayed transcripts (already folded before a restart) are recognised
by their utterance index and not folded twice.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from analytics.app import catalogue_topic
from analytics.scoring.batcher import MicroBatcher
from analytics.scoring.callstate import FoldParams, fold_event, fold_utterance
from analytics.scoring.engines import build_scorer
from analytics.scoring.keywords import KeywordSpotter, categories_or_default
from analytics.scoring.redact import Redactor
from analytics.scoring.sentiment import SentimentScorer
from analytics.scoring.settings import ScoringSettings
from schemas.records import CallEvent, CallState, DeadLetter, Score, Sentiment, Transcript
from schemas.rules import RulesFile
from schemas.settings import KafkaFields
from schemas.topics import CALLS, DEADLETTER, SCORES, TRANSCRIPTS, prefixed

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass
class Entry:
    """One call's table value: the public CallState plus what the agent needs to resume."""

    state: CallState = field(default_factory=CallState)
    last_index: int = -1
    stopped_at_ms: int | None = None
    updated_at_ms: int = 0
    partition: int = 0

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "state": self.state.model_dump(mode="json"),
                "last_index": self.last_index,
                "stopped_at_ms": self.stopped_at_ms,
                "updated_at_ms": self.updated_at_ms,
                "partition": self.partition,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> Entry:
        data = orjson.loads(raw)
        return cls(
            state=CallState.model_validate(data["state"]),
            last_index=int(data.get("last_index", -1)),
            stopped_at_ms=data.get("stopped_at_ms"),
            updated_at_ms=int(data.get("updated_at_ms", 0)),
            partition=int(data.get("partition", 0)),
        )


class TextAnalyser:
    """Redaction and keyword spotting per tenant/campaign, compiled once per pair."""

    def __init__(self, rules: RulesFile, fuzzy_threshold: float = 0.8) -> None:
        self.rules = rules
        self.fuzzy_threshold = fuzzy_threshold
        self._spotters: dict[tuple[str, str], KeywordSpotter] = {}
        self._redactors: dict[tuple[str, str], Redactor] = {}

    def redactor(self, tenant: str, campaign: str) -> Redactor:
        key = (tenant, campaign)
        if key not in self._redactors:
            self._redactors[key] = Redactor(self.rules.resolve(tenant, campaign).redact_pii)
        return self._redactors[key]

    def spotter(self, tenant: str, campaign: str) -> KeywordSpotter:
        key = (tenant, campaign)
        if key not in self._spotters:
            categories = categories_or_default(self.rules.resolve(tenant, campaign).categories)
            self._spotters[key] = KeywordSpotter(categories, self.fuzzy_threshold)
        return self._spotters[key]


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


class ScoringStage:
    """The agent's logic, independent of faust's plumbing (which :func:`attach_scoring` adds)."""

    def __init__(
        self,
        settings: ScoringSettings,
        rules: RulesFile,
        scorer: SentimentScorer,
        clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self.text = TextAnalyser(rules, settings.fuzzy_threshold)
        self.batcher = MicroBatcher(
            scorer,
            max_wait_ms=settings.batch_max_wait_ms,
            max_size=settings.batch_max_size,
            executor_workers=settings.executor_workers,
        )
        self.params = FoldParams(
            window_n=settings.window_n,
            ewma_alpha=settings.ewma_alpha,
            repeat_similarity=settings.repeat_similarity,
            recent_texts=settings.recent_texts,
        )
        self.clock = clock
        self.guard: ChangelogGuard | None = None

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def score_transcripts(
        self, items: list[tuple[Transcript, Entry]]
    ) -> list[tuple[Score, Entry]]:
        """Score a batch of final transcripts (one model call) and fold each into its entry.

        ``items`` holds each transcript with its call's entry; several transcripts of one call
        are folded in order (the entries passed must be the same object for the same call).
        """
        prepared: list[tuple[Transcript, str, list[str]]] = []
        for transcript, _ in items:
            redacted, kinds = self.text.redactor(transcript.tenant, transcript.campaign).redact(
                transcript.text
            )
            prepared.append((transcript, redacted, sorted({*transcript.pii_kinds, *kinds})))
        sentiments: list[Sentiment] = await self.batcher.score_many([p[1] for p in prepared])
        out: list[tuple[Score, Entry]] = []
        for (transcript, redacted, kinds), sentiment, (_, entry) in zip(
            prepared, sentiments, items, strict=True
        ):
            keywords = self.text.spotter(transcript.tenant, transcript.campaign).find(redacted)
            entry.state = fold_utterance(
                entry.state,
                score=sentiment.score,
                keywords=keywords,
                text=redacted,
                start_ms=transcript.start_ms,
                end_ms=transcript.end_ms,
                params=self.params,
            )
            entry.last_index = transcript.utterance_index
            scored_at = self.now_ms()
            entry.updated_at_ms = scored_at
            score = Score(
                call_sid=transcript.call_sid,
                stream_sid=transcript.stream_sid,
                tenant=transcript.tenant,
                campaign=transcript.campaign,
                utterance_id=transcript.utterance_id,
                utterance_index=transcript.utterance_index,
                text=redacted,
                start_ms=transcript.start_ms,
                end_ms=transcript.end_ms,
                sentiment=sentiment,
                keywords=keywords,
                pii_kinds=kinds,
                state=entry.state,
                speech_end_at_ms=transcript.speech_end_at_ms,
                transcript_at_ms=transcript.produced_at_ms,
                scored_at_ms=scored_at,
                latency_ms=float(max(0, scored_at - transcript.produced_at_ms)),
            )
            out.append((score, entry))
        return out

    def apply_event(self, event: CallEvent, entry: Entry) -> Entry:
        entry.state = fold_event(entry.state, event)
        if event.kind == "stop":
            entry.stopped_at_ms = self.now_ms()
        entry.updated_at_ms = self.now_ms()
        return entry

    def expired(self, entry: Entry, now_ms: int) -> bool:
        if entry.stopped_at_ms is not None:
            return now_ms - entry.stopped_at_ms >= self.settings.drop_after_stop_s * 1000
        return now_ms - entry.updated_at_ms >= self.settings.idle_drop_s * 1000


def attach_scoring(
    app: faust.App,
    *,
    settings: ScoringSettings,
    kafka: KafkaFields,
    rules: RulesFile,
    scorer: SentimentScorer | None = None,
    clock: Clock = time.time,
) -> ScoringStage:
    """Register the scoring agent, its call-state table and sweeper on ``app``.

    ``scorer`` overrides the configured engine (tests pass a fake); the configured one is loaded
    here, before the worker starts. Returns the stage (for metrics and tests).
    """
    stage = ScoringStage(settings, rules, scorer or build_scorer(settings), clock)
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
    stage.guard = guard

    async def on_revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        guard.forget(tp.partition for tp in revoked if tp.topic in (transcripts_name, calls_name))

    app.on_partitions_revoked.connect(on_revoked)

    def load(key: bytes, partition: int) -> Entry:
        raw = table.data.get(key)
        if raw is None:
            return Entry(partition=partition)
        try:
            return Entry.from_bytes(raw)
        except (ValueError, ValidationError, KeyError):
            logger.exception("unreadable call state for %r; starting afresh", key)
            return Entry(partition=partition)

    def save(key: bytes, entry: Entry, partition: int) -> None:
        entry.partition = partition
        value = entry.to_bytes()
        table.data[key] = value
        table.send_changelog(partition, key, value)

    async def dead_letter(message: Any, error: str) -> None:
        record = DeadLetter(
            stage="scoring",
            error=error,
            call_sid=message.key.decode(errors="replace") if message.key else None,
            source_topic=message.topic,
            source_partition=message.partition,
            source_offset=message.offset,
            raw_base64=base64.b64encode(message.value or b"").decode(),
            occurred_at_ms=stage.now_ms(),
        )
        await deadletter_topic.send(key=message.key, value=record.to_bytes())

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
        entries: dict[bytes, tuple[Entry, int]] = {}
        newest: dict[bytes, int] = {}  # highest utterance index seen per call in this batch
        pending: list[tuple[Transcript, Entry]] = []
        touched: list[bytes] = []
        for event in events:
            message = event.message
            key: bytes = message.key or b""
            try:
                if message.topic == transcripts_name:
                    transcript = Transcript.model_validate(orjson.loads(message.value))
                    if not transcript.is_final or not transcript.text.strip():
                        continue
                    key = transcript.call_sid.encode()
                    if key not in entries:
                        entries[key] = (load(key, message.partition), message.partition)
                    entry = entries[key][0]
                    if transcript.utterance_index <= newest.get(key, entry.last_index):
                        logger.debug("skipping replayed utterance %s", transcript.utterance_id)
                        continue
                    newest[key] = transcript.utterance_index
                    pending.append((transcript, entry))
                else:
                    call_event = CallEvent.model_validate(orjson.loads(message.value))
                    if call_event.kind not in ("start", "dtmf", "stop"):
                        continue
                    key = call_event.call_sid.encode()
                    if key not in entries:
                        entries[key] = (load(key, message.partition), message.partition)
                    stage.apply_event(call_event, entries[key][0])
                touched.append(key)
            except (ValueError, TypeError, ValidationError) as exc:
                logger.warning("bad record on %s: %s", message.topic, exc)
                await dead_letter(message, f"{type(exc).__name__}: {exc}")
        if pending:
            try:
                scored = await stage.score_transcripts(pending)
            except Exception as exc:  # noqa: BLE001  (a model failure must not stop the stream)
                logger.exception("scoring a batch of %d failed", len(pending))
                for transcript, _ in pending:
                    failed = _Msg(
                        transcripts_name, transcript.call_sid.encode(), transcript.to_bytes()
                    )
                    await dead_letter(failed, f"scoring failed: {exc}")
                scored = []
            for score, _ in scored:
                now = stage.now_ms()
                score = score.model_copy(
                    update={
                        "scored_at_ms": now,
                        "latency_ms": float(max(0, now - score.transcript_at_ms)),
                    }
                )
                await scores_topic.send(key=score.call_sid.encode(), value=score.to_bytes())
        for key in dict.fromkeys(touched):
            entry, partition = entries[key]
            save(key, entry, partition)

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
                entry = Entry.from_bytes(raw)
            except (ValueError, ValidationError, KeyError):
                entry = Entry()
            if stage.expired(entry, now):
                table.data.pop(key, None)
                table.send_changelog(entry.partition, key, None)

    return stage


@dataclass(frozen=True)
class _Msg:
    """Enough of a faust message to dead-letter a record we re-encoded."""

    topic: str
    key: bytes
    value: bytes
    partition: int | None = None
    offset: int | None = None
