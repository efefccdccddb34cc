"""Follow ``agentstream.decisions`` and hand escalated voicebot calls to the next applet.

Every ingest instance reads every partition (no consumer group): only the instance that
holds the call's socket acts on a decision, the others ignore it. The fetch wait is paced
(:class:`schemas.fetchwait.FetchPacer`): short while ``busy()`` (voicebot calls are live) or
decisions flow, long when there is nothing to hand off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from ingest.settings import IngestSettings
from schemas.fetchwait import FetchPacer
from schemas.records import Decision
from schemas.topics import DECISIONS, prefixed

logger = logging.getLogger(__name__)

POLL_MS = 500


class DecisionFollower:
    """Consumes decisions and calls ``on_escalate`` for each escalation."""

    def __init__(
        self,
        settings: IngestSettings,
        on_escalate: Callable[[Decision], Awaitable[None]],
        on_bad_record: Callable[[bytes, str, int, int], None],
        busy: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.pacer = FetchPacer.from_settings(settings, busy)
        self.topic = prefixed(DECISIONS, settings.topic_prefix)
        self._on_escalate = on_escalate
        self._on_bad_record = on_bad_record
        self.ready = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self._consume()
            except KafkaError as exc:
                self.ready = False
                logger.warning("decisions consumer failed, restarting: %r", exc)
                await asyncio.sleep(1.0)

    async def _consume(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers,
            client_id=f"{s.client_id}-ingest-decisions",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=s.fetch_max_wait_ms,
        )
        try:
            await consumer.start()
            parts = consumer.partitions_for_topic(self.topic)
            while not parts:
                await consumer.topics()
                parts = consumer.partitions_for_topic(self.topic)
                if not parts:
                    await asyncio.sleep(0.5)
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
            self.ready = True
            logger.info("following %s for handoffs", self.topic)
            while True:
                await self._follow(consumer)
        finally:
            self.ready = False
            await consumer.stop()

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        # Waking up every POLL_MS lets the pacer notice busy() turning true while idle.
        batches = await consumer.getmany(timeout_ms=POLL_MS)
        if batches:
            self.pacer.saw_records()
        self.pacer.apply(consumer)
        for records in batches.values():
            for message in records:
                await self._handle(message.value or b"", message.partition, message.offset)

    async def _handle(self, raw: bytes, partition: int, offset: int) -> None:
        try:
            decision = Decision.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            self._on_bad_record(raw, f"bad decision record: {exc}", partition, offset)
            return
        if decision.decision == "escalate":
            await self._on_escalate(decision)
