"""Publishing from routing: decisions, callback records, call summaries and dead letters, in
order, each one retried until the broker acknowledges it, with a flush for commit points.

Every record carries this instance's ``as-routing-instance`` header, so its own reader skips
what it published (the router applied it already).

Delivery: the producer uses ``acks=all`` and, where the broker supports it, idempotence
(``producer_idempotence``: ``auto`` tries it and falls back when the broker refuses
InitProducerId, as the embedded tansu broker does). A send that fails (the broker down for
longer than ``producer_delivery_timeout_ms``, a leader change) is sent again, in order, with a
growing backoff, until it is acknowledged; nothing is dropped while the process lives.
:meth:`DecisionPublisher.flush` returns only once everything published before it is
acknowledged, so the evaluator commits an input offset only after its decision is durable.
Only observational records (callback records, dead letters) are dropped, and counted, when more
than ``publish_max_pending`` wait during an outage; decisions never are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from routing.metrics import RoutingMetrics
from routing.settings import RoutingSettings
from schemas.records import CallEvent, CallSummary, DeadLetter, Decision, Record
from schemas.topics import CALL_SUMMARIES, CALLS, DEADLETTER, DECISIONS, prefixed

logger = logging.getLogger(__name__)

OWN_HEADER = "as-routing-instance"
_WINDOW = 256  # records sent before their acks are awaited (pipelining, order kept)


@dataclass
class _Pending:
    topic: str
    key: bytes | None
    value: bytes
    seq: int
    essential: bool  # a decision: never dropped


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Silence one library logger for the duration (the probe's refusal is expected)."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


async def start_producer(settings: RoutingSettings, kafka: dict[str, Any]) -> AIOKafkaProducer:
    """An ``acks=all`` producer, idempotent where the broker supports it (see module docstring)."""
    s = settings
    common: dict[str, Any] = {
        **kafka,
        "linger_ms": s.producer_linger_ms,
        "acks": "all",
        "request_timeout_ms": s.producer_delivery_timeout_ms,
    }
    if s.producer_idempotence != "off":
        producer = AIOKafkaProducer(**common, enable_idempotence=True)
        try:
            with _quiet("aiokafka.producer.sender"):  # its refusal is logged below, once
                await producer.start()
            return producer
        except KafkaError as exc:
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
            if s.producer_idempotence == "on" or exc.retriable:
                raise
            logger.warning(
                "the broker refuses idempotent producers (%r): publishing with acks=all "
                "only; a retried send may then be written twice (readers dedupe decisions)",
                exc,
            )
    producer = AIOKafkaProducer(**common)
    await producer.start()
    return producer


class DecisionPublisher:
    """Ordered, retried publishing with a flush for commit points (see module docstring).

    Until :meth:`start` gives it a producer, what is published is dropped (as before the
    service is up, nothing may reach Kafka).
    """

    def __init__(self, settings: RoutingSettings, metrics: RoutingMetrics) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._metrics = metrics
        prefix = settings.topic_prefix
        self.decisions_topic = prefixed(DECISIONS, prefix)
        self.calls_topic = prefixed(CALLS, prefix)
        self.deadletter_topic = prefixed(DEADLETTER, prefix)
        self.summaries_topic = prefixed(CALL_SUMMARIES, prefix)
        self._pending: deque[_Pending] = deque()
        self._queued = 0  # sequence number of the last record queued
        self._acked = 0  # every record up to this sequence number is acknowledged
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.retries = 0
        self._last_error_log = 0.0
        # Our own records carry this header so our reader skips them without parsing.
        self.instance_id = uuid.uuid4().hex
        self._headers = [(OWN_HEADER, self.instance_id.encode())]

    def start(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._task = asyncio.create_task(self._run(producer), name="routing-sink")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Flush (bounded: during an outage what is left stays unacknowledged, and the
        evaluator has not committed the offsets that produced it), then stop sending."""
        if self._producer is None:
            return
        if not await self.flush(timeout_s):
            logger.warning("stopping with %d records not acknowledged", len(self._pending))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def backlog(self) -> int:
        """Records queued and not yet acknowledged."""
        return len(self._pending)

    def is_own(self, headers: Any) -> bool:
        """Whether a record read back (its headers) was published by this instance."""
        if not headers:
            return False
        own = self._headers[0][1]
        return any(k == OWN_HEADER and v == own for k, v in headers)

    def _put(self, topic: str, key: str | None, record: Record, essential: bool) -> None:
        if self._producer is None:
            return
        if not essential and len(self._pending) >= self.settings.publish_max_pending:
            self.dropped += 1
            self._metrics.publish_errors.labels(topic).inc()
            return
        self._queued += 1
        value = record.to_bytes()
        self._pending.append(
            _Pending(topic, key.encode() if key else None, value, self._queued, essential)
        )
        self._wake.set()

    def publish_decision(self, decision: Decision) -> None:
        self._put(self.decisions_topic, decision.call_sid, decision, essential=True)

    def publish_call_event(self, event: CallEvent) -> None:
        self._put(self.calls_topic, event.call_sid, event, essential=False)

    def publish_dead_letter(self, letter: DeadLetter) -> None:
        self._metrics.deadletters.labels(letter.stage).inc()
        self._put(self.deadletter_topic, letter.call_sid, letter, essential=False)

    def publish_summary(self, summary: CallSummary) -> None:
        self._metrics.summaries.labels(summary.end_reason).inc()
        self._put(self.summaries_topic, summary.call_sid, summary, essential=False)

    async def _run(self, producer: AIOKafkaProducer) -> None:
        s = self.settings
        backoff_s = s.publish_retry_backoff_ms / 1000
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            window = list(self._pending)[:_WINDOW]
            failed = await self._send_window(producer, window)
            delivered = len(window) if failed is None else window.index(failed)
            for _ in range(delivered):
                done = self._pending.popleft()
                self._acked = done.seq
            if delivered:
                self._progress.set()
            if failed is None:
                backoff_s = s.publish_retry_backoff_ms / 1000
                continue
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, s.publish_retry_backoff_max_ms / 1000)

    async def _send_window(
        self, producer: AIOKafkaProducer, window: list[_Pending]
    ) -> _Pending | None:
        """Send ``window`` in order; the first record not acknowledged, or None if all were."""
        futures: list[asyncio.Future[Any]] = []
        failed: _Pending | None = None
        error: BaseException | None = None
        for item in window:
            try:
                futures.append(
                    await producer.send(
                        item.topic, value=item.value, key=item.key, headers=self._headers
                    )
                )
            except KafkaError as exc:
                failed, error = item, exc
                break
        results = await asyncio.gather(*futures, return_exceptions=True)
        for item, result in zip(window, results, strict=False):
            if isinstance(result, BaseException):
                failed, error = item, result
                break
        if failed is not None:
            self.retries += 1
            self._metrics.publish_errors.labels(failed.topic).inc()
            now = time.monotonic()
            if now - self._last_error_log >= 5.0:
                self._last_error_log = now
                logger.warning(
                    "publish to %s failed, retrying until delivered (%d waiting): %r",
                    failed.topic,
                    len(self._pending),
                    error,
                )
        return failed

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything published so far is acknowledged: a commit point.

        Returns False if ``timeout_s`` passed first (nothing may be committed then).
        """
        target = self._queued
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._acked < target and self._pending:
            self._progress.clear()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._progress.wait(), timeout=remaining)
            except TimeoutError:
                return False
        return True
