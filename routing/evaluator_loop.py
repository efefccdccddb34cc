"""The evaluator loop: scores of the calls this instance owns -> router -> decisions.

A consumer group (``consumer_group``) over ``agentstream.scores``: one instance owns each
call's partition. Offsets are committed only after the decisions they led to are
acknowledged, at most every ``commit_interval_s``: a restart replays at most that much, and
replayed utterances are already decided.

Marker scores (watermarks passed on by scoring) are not utterances: the loop evaluates the
audio-time rules at their offset (:meth:`Router.on_progress`), records that the call is analysed
that far (:class:`~routing.watermark.Watermarks`, which Passthru waits on) and publishes it as
an ``analysed`` call event for the other routing instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from routing.parse import RecordParser
from routing.publisher import DecisionPublisher
from routing.reader import YIELD_EVERY
from routing.router import Router
from routing.settings import RoutingSettings
from routing.summaries import SummaryBook
from routing.watermark import Watermarks
from schemas.partition import partition_for
from schemas.records import Score

logger = logging.getLogger(__name__)


class EvaluatorLoop:
    """Consumes owned scores into the router; :meth:`owns` tells the reader which calls."""

    def __init__(
        self,
        settings: RoutingSettings,
        kafka: dict[str, Any],
        scores_topic: str,
        router: Router,
        parser: RecordParser,
        publisher: DecisionPublisher,
        summaries: SummaryBook | None = None,
        watermarks: Watermarks | None = None,
    ) -> None:
        self.settings = settings
        self.summaries = summaries
        self._kafka = kafka
        self.scores_topic = scores_topic
        self.router = router
        self.parser = parser
        self.publisher = publisher
        self.watermarks = watermarks or Watermarks()
        self.consumer: AIOKafkaConsumer | None = None

    async def run(self, rebuilt: asyncio.Event) -> None:
        await rebuilt.wait()  # never decide before knowing what was decided
        s = self.settings
        group = self.consumer = AIOKafkaConsumer(
            self.scores_topic,
            **self._kafka,
            group_id=s.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
        )
        await group.start()
        try:
            await self._consume(group)
        finally:
            # Leaving: commit what is decided so the next owner does not replay it.
            with contextlib.suppress(KafkaError, asyncio.CancelledError):
                await self.publisher.flush()
                await group.commit()

    async def _consume(self, group: AIOKafkaConsumer) -> None:
        s = self.settings
        dirty = False
        last_commit = time.monotonic()
        while True:
            batches = await group.getmany(timeout_ms=200, max_records=500)
            count = 0
            for records in batches.values():
                for raw in records:
                    score = self.parser.parse("scores", Score, raw)
                    if score is not None:
                        self.on_score(score)
                    count += 1
                    dirty = True
                    if count % YIELD_EVERY == 0:
                        await asyncio.sleep(0)
            # Commit only what was decided *and* acknowledged, at most every commit_interval_s.
            if dirty and time.monotonic() - last_commit >= s.commit_interval_s:
                await self.publisher.flush()
                try:
                    await group.commit()
                    dirty = False
                except KafkaError as exc:
                    logger.warning("offset commit failed (will retry): %s", exc)
                last_commit = time.monotonic()

    def on_score(self, score: Score) -> None:
        """One owned score: an utterance to decide on, or a watermark."""
        if score.marker is None:
            if self.router.on_score(score) is not None:
                self.watermarks.poke(score.call_sid)
            if self.summaries is not None:
                self.summaries.on_score(score)
            return
        self.router.on_progress(score)  # decisions first: a waiter woken below sees them
        self.publisher.publish_call_event(self.watermarks.on_marker(score))

    def owns(self, key: bytes | None, partition: int) -> bool:
        """Whether this instance's group owns the call (its partition of the scores topic).

        Call events reach the evaluator through the reader, which sees every call, so the
        evaluator's consumer group reads only scores and stays light under callback floods.
        Topics are co-partitioned by call SID with the default (murmur2) partitioner.
        """
        group = self.consumer
        if group is None:
            return True  # not joined yet: keep the event rather than lose a call start
        owned = {tp.partition for tp in group.assignment() if tp.topic == self.scores_topic}
        if not owned:
            return True
        parts = group.partitions_for_topic(self.scores_topic) or set()
        if key is None or not parts:
            return partition in owned
        return partition_for(key, len(parts)) in owned
