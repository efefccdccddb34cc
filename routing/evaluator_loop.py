"""The evaluator loop: scores of the calls this instance owns -> router -> decisions.

A consumer group (``consumer_group``) over ``agentstream.scores``: one instance owns each
call's partition. Offsets are committed only after the decisions they led to are
acknowledged (:meth:`DecisionPublisher.flush`), at most every ``commit_interval_s``: a restart
replays at most that much, and replayed utterances are already decided. During a broker
outage the flush waits (the publisher retries until delivered), so nothing is committed and
nothing more is consumed.

Rebalance (:class:`_Rebalance`): before giving partitions up, the loop flushes and commits
what it decided and owns nothing (the service ticks no timer) until the new assignment; then
it drops the evaluator state (and so the silence / max-duration timers) of the calls on the
partitions it lost, restarts the silence clock of the calls it keeps (no score was read
during the pause), and adopts the live calls of its new partitions from the call
book every reader keeps (start time, tenant), with their silence clock restarted at adoption,
because the previous owner's last-speech time is not known here. Until it has an assignment it
owns no call.

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

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from routing.evaluator import CallRecord
from routing.parse import RecordParser
from routing.publisher import DecisionPublisher
from routing.reader import YIELD_EVERY
from routing.router import Router
from routing.settings import RoutingSettings
from routing.summaries import SummaryBook
from routing.watermark import Watermarks
from schemas.fetchwait import FetchPacer
from schemas.partition import partition_for
from schemas.records import Score

logger = logging.getLogger(__name__)

_LEAVE_FLUSH_S = 5.0


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
        # Shared with the reader: a call start it reads puts the evaluator on the short wait.
        self.pacer = FetchPacer.from_settings(settings)
        self.owned: set[int] = set()  # partitions of the scores topic assigned to this instance
        self.partitions = 0  # how many the scores topic has (0 = not known yet)
        self._held: set[int] = set()  # owned before the rebalance now in progress

    async def run(self, rebuilt: asyncio.Event) -> None:
        await rebuilt.wait()  # never decide before knowing what was decided
        s = self.settings
        group = self.consumer = AIOKafkaConsumer(
            **self._kafka,
            group_id=s.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
        )
        await group.start()
        group.subscribe([self.scores_topic], listener=_Rebalance(self))
        try:
            await self._consume(group)
        finally:
            # Leaving: commit what is decided and acknowledged so the next owner does not
            # replay it (not if the flush did not finish: then the next owner replays).
            with contextlib.suppress(KafkaError, asyncio.CancelledError, TimeoutError):
                if await self.publisher.flush(_LEAVE_FLUSH_S):
                    await asyncio.wait_for(group.commit(), _LEAVE_FLUSH_S)

    async def _consume(self, group: AIOKafkaConsumer) -> None:
        s = self.settings
        dirty = False
        last_commit = time.monotonic()
        while True:
            batches = await group.getmany(timeout_ms=200, max_records=500)
            if batches:
                self.pacer.saw_records()
            self.pacer.apply(group)
            count = 0
            for tp, records in batches.items():
                for raw in records:
                    if tp.partition not in self.owned:
                        break  # revoked while this batch was in flight: not ours to decide
                    score = self.parser.parse("scores", Score, raw)
                    if score is not None:
                        self.on_score(score)
                    count += 1
                    dirty = True
                    if count % YIELD_EVERY == 0:
                        await asyncio.sleep(0)
            # Commit only what was decided *and* acknowledged, at most every commit_interval_s.
            if dirty and time.monotonic() - last_commit >= s.commit_interval_s:
                await self.publisher.flush()  # waits out an outage: the publisher retries
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
        if score.marker == "gap" and self.summaries is not None:
            self.summaries.on_score(score)  # counted in the call's summary
        self.publisher.publish_call_event(self.watermarks.on_marker(score))

    # --- ownership ------------------------------------------------------------------------------

    def _partition_of(self, call_sid: str) -> int | None:
        if not self.partitions:
            return None
        return partition_for(call_sid.encode(), self.partitions)

    def owns(self, key: bytes | None, partition: int) -> bool:
        """Whether this instance's group owns the call (its partition of the scores topic).

        Call events reach the evaluator through the reader, which sees every call, so the
        evaluator's consumer group reads only scores and stays light under callback floods.
        Topics are co-partitioned by call SID with the default (murmur2) partitioner. Before
        an assignment, no call is owned (assignment adopts the live calls, see the module).
        """
        if not self.owned:
            return False
        if key is None or not self.partitions:
            return partition in self.owned
        return partition_for(key, self.partitions) in self.owned

    async def on_revoked(self, revoked: set[int]) -> None:
        """Flush and commit what was decided; own nothing until the next assignment.

        The state of the calls is dropped on assignment, for the partitions not assigned
        again (an eager rebalance revokes everything, also what comes straight back).
        """
        group = self.consumer
        if group is not None and revoked:
            flushed = await self.publisher.flush(_LEAVE_FLUSH_S)
            if flushed:
                with contextlib.suppress(KafkaError, TimeoutError):
                    await asyncio.wait_for(group.commit(), _LEAVE_FLUSH_S)
        self._held |= self.owned
        self.owned = set()

    def drop(self, partitions: set[int]) -> int:
        """Forget the evaluator state (and so the timers) of the calls on ``partitions``."""
        calls = self.router.evaluator.calls
        gone = [sid for sid in calls if self._partition_of(sid) in partitions]
        for sid in gone:
            del calls[sid]  # its tick-heap entries are skipped once the record is gone
        return len(gone)

    def on_assigned(self, assigned: set[int], partitions: int) -> None:
        """Own ``assigned`` and adopt the live calls on them that the call book knows."""
        self.partitions = partitions or self.partitions
        held, self._held = self._held | self.owned, set()
        dropped = self.drop(held - assigned)
        self.owned = set(assigned)
        self.resume(assigned & held)
        adopted = self.adopt(assigned - held)
        logger.info(
            "partitions %s assigned: dropped %d calls of lost partitions, adopted %d live calls",
            sorted(assigned),
            dropped,
            adopted,
        )

    def resume(self, partitions: set[int]) -> None:
        """Kept calls: nothing to restart. Silence is measured in the call's own audio time
        (what the pipeline analysed), so the pause of a rebalance is not the caller's silence."""

    def adopt(self, partitions: set[int]) -> int:
        """Evaluator records for the live, not escalated calls of ``partitions`` (see module)."""
        if not partitions:
            return 0
        evaluator = self.router.evaluator
        now_ms = int(self.router.clock() * 1000)
        horizon_ms = now_ms - int(self.settings.state_idle_s * 1000)
        count = 0
        for sid, view in list(self.router.book.calls.items()):
            if self._partition_of(sid) not in partitions:
                continue
            record = evaluator.calls.get(sid)
            if record is not None and (record.owned or record.escalation is not None):
                continue
            started = view.started_at_ms
            if started is None or view.stopped_at_ms is not None or view.escalation is not None:
                continue
            if started < horizon_ms:
                continue  # its stop was lost long ago: not a live call
            if record is None:
                # (a record may exist already, not owned: made by a decision read back)
                record = evaluator.calls[sid] = CallRecord(sid, first_seen_ms=now_ms)
            record.stream_sid = view.stream_sid or record.stream_sid
            record.tenant, record.campaign = view.tenant, view.campaign
            record.started_at_ms = started
            record.last_seen_ms = now_ms
            record.owned = True
            record.restart_silence = True  # earlier speech is not known here
            count += 1
        return count


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: EvaluatorLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        topic = self.loop.scores_topic
        await self.loop.on_revoked({tp.partition for tp in revoked if tp.topic == topic})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        loop = self.loop
        group = loop.consumer
        parts = group.partitions_for_topic(loop.scores_topic) if group is not None else None
        loop.on_assigned(
            {tp.partition for tp in assigned if tp.topic == loop.scores_topic}, len(parts or ())
        )
