"""Publishing from routing: decisions, callback records, call summaries and dead letters, in
order, one send at a time, with a flush for commit points.

Every record carries this instance's ``as-routing-instance`` header, so its own reader skips
what it published (the router applied it already).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from routing.metrics import RoutingMetrics
from routing.settings import RoutingSettings
from schemas.records import CallEvent, CallSummary, DeadLetter, Decision, Record
from schemas.topics import CALL_SUMMARIES, CALLS, DEADLETTER, DECISIONS, prefixed

logger = logging.getLogger(__name__)

OWN_HEADER = "as-routing-instance"


class DecisionPublisher:
    """Fire-and-forget publishing with ordered sends and a flush for commit points.

    Until :meth:`start` gives it a producer, what is published is dropped (as before the
    service is up, nothing may reach Kafka).
    """

    def __init__(self, settings: RoutingSettings, metrics: RoutingMetrics) -> None:
        self._producer: AIOKafkaProducer | None = None
        self._metrics = metrics
        prefix = settings.topic_prefix
        self.decisions_topic = prefixed(DECISIONS, prefix)
        self.calls_topic = prefixed(CALLS, prefix)
        self.deadletter_topic = prefixed(DEADLETTER, prefix)
        self.summaries_topic = prefixed(CALL_SUMMARIES, prefix)
        self._queue: asyncio.Queue[tuple[str, bytes | None, bytes]] = asyncio.Queue()
        self._inflight: set[asyncio.Future[Any]] = set()
        self._task: asyncio.Task[None] | None = None
        # Our own records carry this header so our reader skips them without parsing.
        self.instance_id = uuid.uuid4().hex
        self._headers = [(OWN_HEADER, self.instance_id.encode())]

    def start(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._task = asyncio.create_task(self._run(producer), name="routing-sink")

    async def stop(self) -> None:
        if self._producer is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), timeout=5)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def is_own(self, headers: Any) -> bool:
        """Whether a record read back (its headers) was published by this instance."""
        if not headers:
            return False
        own = self._headers[0][1]
        return any(k == OWN_HEADER and v == own for k, v in headers)

    def _put(self, topic: str, key: str | None, record: Record) -> None:
        if self._producer is None:
            return
        self._queue.put_nowait((topic, key.encode() if key else None, record.to_bytes()))

    def publish_decision(self, decision: Decision) -> None:
        self._put(self.decisions_topic, decision.call_sid, decision)

    def publish_call_event(self, event: CallEvent) -> None:
        self._put(self.calls_topic, event.call_sid, event)

    def publish_dead_letter(self, letter: DeadLetter) -> None:
        self._metrics.deadletters.labels(letter.stage).inc()
        self._put(self.deadletter_topic, letter.call_sid, letter)

    def publish_summary(self, summary: CallSummary) -> None:
        self._metrics.summaries.labels(summary.end_reason).inc()
        self._put(self.summaries_topic, summary.call_sid, summary)

    async def _run(self, producer: AIOKafkaProducer) -> None:
        while True:
            topic, key, value = await self._queue.get()
            try:
                future = await producer.send(topic, value=value, key=key, headers=self._headers)
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
