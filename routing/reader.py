"""The decision reader: every partition of ``agentstream.decisions`` from the beginning, then
``agentstream.calls`` and ``agentstream.transcripts`` from their end, into the router's memory.

No consumer group: every instance reads everything, so any instance can answer Passthru.
Readiness waits until decisions are read up to the fetch high-water mark (on the embedded
broker ListOffsets(latest) answers too low, so the end is taken from fetch responses, never
from ``end_offsets``). Start / stop / DTMF events of the calls this instance owns are passed
on to the evaluator (``agentstream.calls`` is co-partitioned by call SID), so a flood of
callback records on ``agentstream.calls`` never sits in front of the scores; they and the
Passthru answers other instances gave for those calls also go to the call-summary book.

Also followed from their end: ``agentstream.workers`` (heartbeats: the :class:`WorkerBoard`
behind ``/ready``) and other instances' ``analysed`` watermarks on ``agentstream.calls``
(:class:`Watermarks`). Watermark transcripts are not utterances: nothing waits on them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from routing.metrics import RoutingMetrics
from routing.parse import RecordParser
from routing.publisher import DecisionPublisher
from routing.readiness import WorkerBoard
from routing.router import Router
from routing.settings import RoutingSettings
from routing.summaries import SummaryBook
from routing.watermark import Watermarks
from schemas.records import CallEvent, Decision, Transcript, WorkerHeartbeat

logger = logging.getLogger(__name__)

YIELD_EVERY = 32
_WANTED_BY_READER = frozenset({"start", "stop", "dtmf", "passthru", "analysed"})
_WANTED_BY_EVALUATOR = frozenset({"start", "stop", "dtmf"})


class DecisionReader:
    """Rebuilds and then follows what every instance decided and heard (see module docstring)."""

    def __init__(
        self,
        settings: RoutingSettings,
        kafka: dict[str, Any],
        topics: dict[str, str],
        router: Router,
        parser: RecordParser,
        publisher: DecisionPublisher,
        metrics: RoutingMetrics,
        owns: Callable[[bytes | None, int], bool],
        summaries: SummaryBook | None = None,
        watermarks: Watermarks | None = None,
        board: WorkerBoard | None = None,
    ) -> None:
        self.settings = settings
        self._kafka = kafka
        self.topics = topics
        self.router = router
        self.parser = parser
        self.publisher = publisher
        self.metrics = metrics
        self.owns = owns
        self.summaries = summaries
        self.watermarks = watermarks or Watermarks()
        self.board = board or WorkerBoard()
        self.consumer: AIOKafkaConsumer | None = None
        self.rebuilt = asyncio.Event()

    async def run(self) -> None:
        """Decisions from the beginning (then ready), calls and transcripts from their end."""
        s = self.settings
        reader = self.consumer = AIOKafkaConsumer(
            **self._kafka,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await reader.start()
        tps: dict[str, list[TopicPartition]] = {}
        for kind in ("decisions", "calls", "transcripts", "workers"):
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
        await reader.seek_to_end(*tps["calls"], *tps["transcripts"], *tps["workers"])
        started = time.monotonic()
        rebuilt = 0
        pending = set(tps["decisions"])
        while True:
            batches = await reader.getmany(timeout_ms=100, max_records=500)
            count = 0
            for tp, records in batches.items():
                for raw in records:
                    self._apply(tp.topic, raw)
                    count += 1
                    if not self.router.ready and tp.topic == self.topics["decisions"]:
                        rebuilt += 1
                    if count % YIELD_EVERY == 0:
                        await asyncio.sleep(0)
            if pending:
                for tp in list(pending):
                    high = reader.highwater(tp)
                    if high is not None and await reader.position(tp) >= high:
                        pending.discard(tp)
                if not pending:
                    self._ready(rebuilt, started)

    def _ready(self, rebuilt: int, started: float) -> None:
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

    def _apply(self, topic: str, raw: Any) -> None:
        if self.publisher.is_own(raw.headers):
            return  # applied when we published it
        parse = self.parser.parse
        if topic == self.topics["decisions"]:
            decision = parse("decisions", Decision, raw)
            if decision is not None:
                self.router.on_decision_record(decision)
                self.watermarks.poke(decision.call_sid)
        elif topic == self.topics["calls"]:
            event = parse("calls", CallEvent, raw, _WANTED_BY_READER)
            if event is None:
                return
            if event.kind == "analysed":
                self.watermarks.on_event(event)
                return
            self.router.on_observed_call_event(event)
            if self.owns(raw.key, raw.partition):
                if event.kind in _WANTED_BY_EVALUATOR:
                    self.router.on_call_event(event)
                if self.summaries is not None:
                    self.summaries.on_call_event(event)
            self.watermarks.poke(event.call_sid)
        elif topic == self.topics["workers"]:
            heartbeat = parse("workers", WorkerHeartbeat, raw)
            if heartbeat is not None:
                self.board.note(heartbeat)
        else:
            transcript = parse("transcripts", Transcript, raw)
            if transcript is not None and transcript.marker is None:
                self.router.on_transcript(transcript)
