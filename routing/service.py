"""The routing service: Kafka loops around the :class:`~routing.router.Router`, plus the HTTP app.

Per instance:
- a *reader* (no consumer group, every partition) of ``agentstream.decisions`` from the
  beginning, plus ``agentstream.calls`` and ``agentstream.transcripts`` from their end: the call
  book Passthru answers from. Readiness waits until decisions are read up to the fetch
  high-water mark (on the embedded broker ListOffsets(latest) answers too low, so the end is
  taken from fetch responses, never from ``end_offsets``);
- an *evaluator* in consumer group ``consumer_group`` over ``agentstream.scores`` (one instance
  owns each call's partition), which publishes decisions and commits offsets only after they
  are acknowledged; it gets start / stop / DTMF events of the calls it owns from the reader
  (``agentstream.calls`` is co-partitioned by call SID), so a flood of callback records on
  ``agentstream.calls`` never sits in front of the scores;
- a tick for silence / max-duration rules, eviction of idle calls, and rules reload on file
  change or :meth:`RoutingService.request_reload` (SIGHUP).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from pydantic import ValidationError

from routing.http import create_app
from routing.metrics import RoutingMetrics
from routing.router import Router
from routing.settings import RoutingSettings
from schemas.records import CallEvent, DeadLetter, Decision, Record, Score, Transcript
from schemas.rules import RulesError, RulesFile, default_rules, parse_rules
from schemas.topics import CALLS, DEADLETTER, DECISIONS, SCORES, TRANSCRIPTS, prefixed

logger = logging.getLogger(__name__)

_YIELD_EVERY = 32
_TICK_BATCH = 200
_OWN = "as-routing-instance"
_WANTED_BY_READER = frozenset({"start", "stop", "dtmf", "passthru"})
_WANTED_BY_EVALUATOR = frozenset({"start", "stop", "dtmf"})


class RulesSource:
    """Where the rules come from, and whether they changed since the last load."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None

    def _current_stamp(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def load(self) -> RulesFile:
        """Read and validate; raises :class:`RulesError` naming the line."""
        if self.path is None:
            return default_rules()
        stamp = self._current_stamp()
        try:
            text = self.path.read_text("utf-8")
        except OSError as exc:
            raise RulesError(f"{self.path}: cannot read: {exc}") from exc
        rules = parse_rules(text, str(self.path))
        self._stamp = stamp
        return rules

    def changed(self) -> bool:
        return self.path is not None and self._current_stamp() != self._stamp


class KafkaSink:
    """Fire-and-forget publishing with ordered sends and a flush for commit points."""

    def __init__(
        self, producer: AIOKafkaProducer, settings: RoutingSettings, metrics: RoutingMetrics
    ) -> None:
        self._producer = producer
        self._metrics = metrics
        prefix = settings.topic_prefix
        self.decisions_topic = prefixed(DECISIONS, prefix)
        self.calls_topic = prefixed(CALLS, prefix)
        self.deadletter_topic = prefixed(DEADLETTER, prefix)
        self._queue: asyncio.Queue[tuple[str, bytes | None, bytes]] = asyncio.Queue()
        self._inflight: set[asyncio.Future[Any]] = set()
        self._task: asyncio.Task[None] | None = None
        # Our own records carry this header so our reader skips them without parsing.
        self.instance_id = uuid.uuid4().hex
        self._headers = [(_OWN, self.instance_id.encode())]

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="routing-sink")

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), timeout=5)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _put(self, topic: str, key: str | None, record: Record) -> None:
        self._queue.put_nowait((topic, key.encode() if key else None, record.to_bytes()))

    def publish_decision(self, decision: Decision) -> None:
        self._put(self.decisions_topic, decision.call_sid, decision)

    def publish_call_event(self, event: CallEvent) -> None:
        self._put(self.calls_topic, event.call_sid, event)

    def publish_dead_letter(self, letter: DeadLetter) -> None:
        self._put(self.deadletter_topic, letter.call_sid, letter)

    async def _run(self) -> None:
        while True:
            topic, key, value = await self._queue.get()
            try:
                future = await self._producer.send(
                    topic, value=value, key=key, headers=self._headers
                )
            except KafkaError:
                logger.exception("cannot publish to %s", topic)
                self._metrics.publish_errors.labels(topic).inc()
                self._queue.task_done()
                continue
            self._inflight.add(future)
            future.add_done_callback(lambda f, t=topic: self._delivered(f, t))
            self._queue.task_done()

    def _delivered(self, future: asyncio.Future[Any], topic: str) -> None:
        self._inflight.discard(future)
        if not future.cancelled() and future.exception() is not None:
            logger.error("publish to %s failed: %s", topic, future.exception())
            self._metrics.publish_errors.labels(topic).inc()

    async def flush(self) -> None:
        """Wait until everything queued so far is acknowledged (or failed): a commit point."""
        await self._queue.join()
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)


class RoutingService:
    def __init__(
        self,
        settings: RoutingSettings,
        rules: RulesFile | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.rules_source = RulesSource(settings.rules_path)
        self.metrics = RoutingMetrics()
        self._sink: KafkaSink | None = None
        self.router = Router(
            rules if rules is not None else self.rules_source.load(),
            self,  # publishing goes through the sink once started
            clock=clock,
            grace_ms=settings.passthru_grace_ms,
            publish_continue=settings.publish_continue,
            max_score_age_s=settings.max_score_age_s,
            metrics=self.metrics,
            record_callbacks=settings.record_callbacks,
        )
        self._producer: AIOKafkaProducer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reader: AIOKafkaConsumer | None = None
        self._group: AIOKafkaConsumer | None = None
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None
        prefix = settings.topic_prefix
        self.topics = {
            "decisions": prefixed(DECISIONS, prefix),
            "calls": prefixed(CALLS, prefix),
            "transcripts": prefixed(TRANSCRIPTS, prefix),
            "scores": prefixed(SCORES, prefix),
        }
        self.rebuilt = asyncio.Event()
        self.failed = asyncio.Event()

    # Sink interface (delegates to Kafka once started; before that nothing is published).
    def publish_decision(self, decision: Decision) -> None:
        if self._sink is not None:
            self._sink.publish_decision(decision)

    def publish_call_event(self, event: CallEvent) -> None:
        if self._sink is not None:
            self._sink.publish_call_event(event)

    # --- lifecycle ------------------------------------------------------------------------------

    def _kafka(self) -> dict[str, Any]:
        s = self.settings
        return {"bootstrap_servers": s.bootstrap_servers, "client_id": f"{s.client_id}-routing"}

    async def start(self, serve_http: bool = True) -> None:
        s = self.settings
        if serve_http:
            await self._start_http()
        self._producer = AIOKafkaProducer(
            **self._kafka(), linger_ms=s.producer_linger_ms, acks="all"
        )
        await self._producer.start()
        self._sink = KafkaSink(self._producer, s, self.metrics)
        self._sink.start()
        for coro, name in (
            (self._read_loop(), "routing-reader"),
            (self._housekeeping(), "routing-housekeeping"),
            (self._evaluate_loop(), "routing-evaluator"),
        ):
            task = asyncio.create_task(coro, name=name)
            task.add_done_callback(self._task_done)
            self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error("%s failed: %r", task.get_name(), exc, exc_info=exc)
            self.failed.set()

    async def _start_http(self) -> None:
        self._runner = web.AppRunner(create_app(self.router), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        server = site._server  # noqa: SLF001 - the only way to learn an ephemeral port
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.settings.port

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._sink is not None:
            await self._sink.stop()
        for client in (self._reader, self._group, self._producer):
            if client is not None:
                with contextlib.suppress(KafkaError, OSError):
                    await client.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- reading ----------------------------------------------------------------------------------

    def _is_own(self, raw: Any) -> bool:
        if self._sink is None or not raw.headers:
            return False
        own = self._sink.instance_id.encode()
        return any(k == _OWN and v == own for k, v in raw.headers)

    def _parse(
        self,
        topic_kind: str,
        model: type[Record],
        raw: Any,
        kinds: frozenset[str] | None = None,
    ) -> Record | None:
        """Validate one record; with ``kinds``, skip other call-event kinds before validating."""
        try:
            data = orjson.loads(raw.value)
            if kinds is not None and isinstance(data, dict) and data.get("kind") not in kinds:
                return None
            return model.model_validate(data)
        except (orjson.JSONDecodeError, ValidationError, TypeError) as exc:
            self.metrics.bad_records.labels(topic_kind).inc()
            logger.warning("bad %s record at %s/%s: %s", topic_kind, raw.partition, raw.offset, exc)
            if self._sink is not None and topic_kind in ("scores", "calls"):
                self._sink.publish_dead_letter(
                    DeadLetter(
                        stage="routing",
                        error=str(exc).splitlines()[0][:500],
                        call_sid=raw.key.decode("utf-8", "replace") if raw.key else None,
                        source_topic=raw.topic,
                        source_partition=raw.partition,
                        source_offset=raw.offset,
                        raw_base64=base64.b64encode(raw.value or b"").decode(),
                        occurred_at_ms=int(time.time() * 1000),
                    )
                )
            return None

    async def _read_loop(self) -> None:
        """Decisions from the beginning (then ready), calls and transcripts from their end."""
        s = self.settings
        reader = self._reader = AIOKafkaConsumer(
            **self._kafka(),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await reader.start()
        tps: dict[str, list[TopicPartition]] = {}
        for kind in ("decisions", "calls", "transcripts"):
            topic = self.topics[kind]
            parts = reader.partitions_for_topic(topic)
            deadline = time.monotonic() + s.rebuild_timeout_s
            while not parts:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"topic {topic} does not exist")
                await reader.force_metadata_update()  # type: ignore[no-untyped-call]
                parts = reader.partitions_for_topic(topic)
                if not parts:
                    await asyncio.sleep(0.5)
            tps[kind] = [TopicPartition(topic, p) for p in sorted(parts)]
        reader.assign([tp for group in tps.values() for tp in group])
        await reader.seek_to_beginning(*tps["decisions"])
        await reader.seek_to_end(*tps["calls"], *tps["transcripts"])
        started = time.monotonic()
        rebuilt = 0
        pending = set(tps["decisions"])
        while True:
            batches = await reader.getmany(timeout_ms=100, max_records=500)
            count = 0
            for tp, records in batches.items():
                for raw in records:
                    self._apply_read(tp.topic, raw)
                    count += 1
                    if not self.router.ready and tp.topic == self.topics["decisions"]:
                        rebuilt += 1
                    if count % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
            if pending:
                for tp in list(pending):
                    high = reader.highwater(tp)
                    if high is not None and await reader.position(tp) >= high:
                        pending.discard(tp)
                if not pending:
                    # The rebuilt state is long-lived: keep it out of the cyclic collector's
                    # full passes so they do not stall callbacks (tens of ms with 10k calls).
                    gc.collect()
                    gc.freeze()
                    self.router.ready = True
                    self.metrics.ready.set(1)
                    self.rebuilt.set()
                    logger.info(
                        "decision state rebuilt: %d decisions, %d escalated calls in %.2f s",
                        rebuilt,
                        sum(1 for v in self.router.book.calls.values() if v.escalation),
                        time.monotonic() - started,
                    )

    def _apply_read(self, topic: str, raw: Any) -> None:
        if self._is_own(raw):
            return  # applied when we published it
        if topic == self.topics["decisions"]:
            decision = self._parse("decisions", Decision, raw)
            if isinstance(decision, Decision):
                self.router.on_decision_record(decision)
        elif topic == self.topics["calls"]:
            event = self._parse("calls", CallEvent, raw, _WANTED_BY_READER)
            if isinstance(event, CallEvent):
                self.router.on_observed_call_event(event)
                if event.kind in _WANTED_BY_EVALUATOR and self._owns(raw.key, raw.partition):
                    self.router.on_call_event(event)
        else:
            transcript = self._parse("transcripts", Transcript, raw)
            if isinstance(transcript, Transcript):
                self.router.on_transcript(transcript)

    async def _evaluate_loop(self) -> None:
        """Scores and call events of the calls this instance owns -> decisions."""
        await self.rebuilt.wait()  # never decide before knowing what was decided
        s = self.settings
        group = self._group = AIOKafkaConsumer(
            self.topics["scores"],
            **self._kafka(),
            group_id=s.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
        )
        await group.start()
        assert self._sink is not None
        try:
            await self._consume_owned(group)
        finally:
            # Leaving: commit what is decided so the next owner does not replay it.
            with contextlib.suppress(KafkaError, asyncio.CancelledError):
                await self._sink.flush()
                await group.commit()

    async def _consume_owned(self, group: AIOKafkaConsumer) -> None:
        s = self.settings
        assert self._sink is not None
        dirty = False
        last_commit = time.monotonic()
        while True:
            batches = await group.getmany(timeout_ms=200, max_records=500)
            count = 0
            for tp, records in batches.items():
                for raw in records:
                    self._apply_owned(tp.topic, raw)
                    count += 1
                    dirty = True
                    if count % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
            # Commit only what was decided *and* acknowledged, at most every commit_interval_s:
            # a restart replays at most that much, and replayed utterances are already decided.
            if dirty and time.monotonic() - last_commit >= s.commit_interval_s:
                await self._sink.flush()
                try:
                    await group.commit()
                    dirty = False
                except KafkaError as exc:
                    logger.warning("offset commit failed (will retry): %s", exc)
                last_commit = time.monotonic()

    def _apply_owned(self, topic: str, raw: Any) -> None:
        score = self._parse("scores", Score, raw)
        if isinstance(score, Score):
            self.router.on_score(score)

    def _owns(self, key: bytes | None, partition: int) -> bool:
        """Whether this instance's group owns the call (its partition of the scores topic).

        Call events reach the evaluator through the reader, which sees every call, so the
        evaluator's consumer group reads only scores and stays light under callback floods.
        Topics are co-partitioned by call SID with the default (murmur2) partitioner.
        """
        group = self._group
        if group is None:
            return True  # not joined yet: keep the event rather than lose a call start
        owned = {tp.partition for tp in group.assignment() if tp.topic == self.topics["scores"]}
        if not owned:
            return True
        parts = group.partitions_for_topic(self.topics["scores"]) or set()
        if key is None or not parts:
            return partition in owned
        return (murmur2(key) & 0x7FFFFFFF) % len(parts) in owned

    # --- time-driven work -----------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        s = self.settings
        last_evict = last_poll = time.monotonic()
        while True:
            await asyncio.sleep(s.tick_interval_ms / 1000)
            if self.router.ready:
                self.router.tick(_TICK_BATCH)
                while self.router.evaluator.due_now():
                    await asyncio.sleep(0)  # let callbacks in between bursts of deadlines
                    self.router.tick(_TICK_BATCH)
            now = time.monotonic()
            if now - last_evict >= 60:
                last_evict = now
                evicted = self.router.evict(s.state_idle_s)
                if evicted:
                    logger.info("forgot %d idle calls", evicted)
            if s.rules_poll_s > 0 and now - last_poll >= s.rules_poll_s:
                last_poll = now
                if self.rules_source.changed():
                    self.reload_rules()

    def reload_rules(self) -> bool:
        """Load the rules file again; on error keep the current rules. State is kept."""
        try:
            rules = self.rules_source.load()
        except RulesError as exc:
            logger.error("rules reload failed, keeping the current rules:\n%s", exc)
            self.metrics.rules_reloads.labels("error").inc()
            return False
        self.router.set_rules(rules)
        self.metrics.rules_reloads.labels("ok").inc()
        logger.info("rules reloaded from %s", self.rules_source.path or "the shipped file")
        return True

    def request_reload(self) -> None:
        """SIGHUP handler: reload at once (cheap, in the loop thread)."""
        self.reload_rules()
