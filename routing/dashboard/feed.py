"""The dashboard's reader: every partition of calls, transcripts, scores and decisions into a
:class:`~routing.dashboard.board.Board`.

No consumer group: every routing instance shows every call. It starts ``lookback_s`` back in
time (``offsets_for_times``; the beginning where the broker cannot answer that) so calls that
are already live show up when routing starts. Records that do not parse are skipped and
counted; the dashboard never writes anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from routing.dashboard.board import Board
from schemas.fetchwait import FetchPacer
from schemas.records import CallEvent, Decision, Score, Transcript
from schemas.topics import CALLS, DECISIONS, SCORES, TRANSCRIPTS, prefixed

logger = logging.getLogger(__name__)

_YIELD_EVERY = 64
_KINDS_SHOWN = frozenset({"start", "stop"})


class BoardFeed:
    """Reads the four topics the dashboard shows and applies each record to the board."""

    def __init__(
        self,
        board: Board,
        *,
        bootstrap_servers: str,
        topic_prefix: str = "",
        client_id: str = "agentstream-dashboard",
        lookback_s: float = 3600.0,
        fetch_max_wait_ms: int = 100,
        pacer: FetchPacer | None = None,
    ) -> None:
        self.board = board
        self._kafka: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
        }
        self.lookback_s = lookback_s
        self.fetch_max_wait_ms = fetch_max_wait_ms
        # the long wait once nothing shows for a while (an idle stack would poll 10 times a second)
        self.pacer = pacer or FetchPacer(fetch_max_wait_ms, fetch_max_wait_ms, 1.0)
        self.topics = {
            prefixed(CALLS, topic_prefix): "calls",
            prefixed(TRANSCRIPTS, topic_prefix): "transcripts",
            prefixed(SCORES, topic_prefix): "scores",
            prefixed(DECISIONS, topic_prefix): "decisions",
        }
        self.applied = 0
        self.bad = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def apply(self, kind: str, value: bytes | None) -> bool:
        """Parse one record of topic ``kind`` and apply it; False when it was skipped."""
        try:
            data = orjson.loads(value or b"null")
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            if kind == "calls":
                if data.get("kind") not in _KINDS_SHOWN:
                    return False
                self.board.apply_call_event(CallEvent.model_validate(data))
            elif data.get("marker") is not None:
                return False  # a watermark passed through the pipeline, not an utterance
            elif kind == "transcripts":
                self.board.apply_transcript(Transcript.model_validate(data))
            elif kind == "scores":
                self.board.apply_score(Score.model_validate(data))
            else:
                self.board.apply_decision(Decision.model_validate(data))
        except (orjson.JSONDecodeError, ValidationError, TypeError) as exc:
            self.bad += 1
            logger.debug("dashboard skips a bad %s record: %s", kind, exc)
            return False
        self.applied += 1
        return True

    async def _positions(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        since_ms = int((time.time() - self.lookback_s) * 1000)
        try:
            found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        except (KafkaError, ValueError) as exc:
            logger.info("offsets_for_times unavailable (%s): reading from the beginning", exc)
            found = {}
        for tp in tps:
            hit = found.get(tp)
            if hit is not None:
                consumer.seek(tp, hit.offset)
            else:
                await consumer.seek_to_beginning(tp)

    async def run(self) -> None:
        consumer = self._consumer = AIOKafkaConsumer(
            **self._kafka,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        await consumer.start()
        try:
            tps: list[TopicPartition] = []
            for topic in self.topics:
                parts = consumer.partitions_for_topic(topic)
                while not parts:
                    await consumer.force_metadata_update()  # type: ignore[no-untyped-call]
                    parts = consumer.partitions_for_topic(topic)
                    if not parts:
                        await asyncio.sleep(0.5)
                tps.extend(TopicPartition(topic, p) for p in sorted(parts))
            consumer.assign(tps)
            await self._positions(consumer, tps)
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=1000)
                if batches:
                    self.pacer.saw_records()
                self.pacer.apply(consumer)
                count = 0
                for tp, records in batches.items():
                    kind = self.topics[tp.topic]
                    for record in records:
                        self.apply(kind, record.value)
                        count += 1
                        if count % _YIELD_EVERY == 0:
                            await asyncio.sleep(0)
        finally:
            with contextlib.suppress(KafkaError, OSError):
                await consumer.stop()

    async def run_forever(self, retry_s: float = 2.0) -> None:
        """:meth:`run`, started again after a Kafka error: the dashboard never stops routing."""
        while True:
            try:
                await self.run()
            except (KafkaError, OSError) as exc:
                logger.warning("dashboard feed failed, retrying in %.0f s: %s", retry_s, exc)
                await asyncio.sleep(retry_s)

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run_forever(), name="dashboard-feed")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
