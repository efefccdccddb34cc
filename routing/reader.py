"""The decision reader: every partition of ``agentstream.decisions`` and ``agentstream.calls``
from the start of the rebuild window (``rebuild_window_h``, default the last 6 hours: the calls
that can still be live), then ``agentstream.transcripts`` from its end, into the router's memory.

No consumer group: every instance reads everything, so any instance can answer Passthru.
Readiness waits until decisions and call events are read up to the fetch high-water mark (on
the embedded broker ListOffsets(latest) answers too low, so the end is taken from fetch
responses, never from ``end_offsets``), or until ``rebuild_timeout_s`` passed (logged;
:attr:`DecisionReader.complete` is then False). :attr:`DecisionReader.rebuilding` is True
until then: Passthru may read it to wait or answer ``complete: false``.
The window is found with Kafka's time index; records older than it are skipped unparsed
(tansu has no time index). Start / stop / DTMF events of the calls this instance owns are passed
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
from aiokafka.errors import KafkaError

from routing.metrics import RoutingMetrics
from routing.parse import RecordParser
from routing.publisher import DecisionPublisher
from routing.readiness import WorkerBoard
from routing.router import Router
from routing.settings import RoutingSettings
from routing.summaries import SummaryBook
from routing.watermark import Watermarks
from schemas.fetchwait import FetchPacer
from schemas.records import CallEvent, Decision, Transcript, WorkerHeartbeat

logger = logging.getLogger(__name__)

YIELD_EVERY = 32
_WANTED_BY_READER = frozenset({"start", "stop", "dtmf", "passthru", "analysed"})
_WANTED_BY_EVALUATOR = frozenset({"start", "stop", "dtmf"})
_KINDS = ("decisions", "calls", "transcripts", "workers")


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
        pacer: FetchPacer | None = None,
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
        self.pacer = pacer or FetchPacer.from_settings(settings)
        self.consumer: AIOKafkaConsumer | None = None
        self.rebuilt = asyncio.Event()
        self._window_start_ms = 0
        self.complete = True  # False when the rebuild timed out before the end of the window

    @property
    def rebuilding(self) -> bool:
        """True until the state is rebuilt (or the rebuild timed out): answers may be partial."""
        return not self.rebuilt.is_set()

    async def _partitions(self, reader: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
        deadline = time.monotonic() + self.settings.rebuild_timeout_s
        parts = reader.partitions_for_topic(topic)
        while not parts:
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {topic} does not exist")
            await reader.force_metadata_update()  # type: ignore[no-untyped-call]
            parts = reader.partitions_for_topic(topic)
            if not parts:
                await asyncio.sleep(0.5)
        return [TopicPartition(topic, p) for p in sorted(parts)]

    async def _seek_to_window(self, reader: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        """Each partition at its first record of the window (Kafka's time index); where the
        broker answers too early (tansu answers 0), :meth:`_apply` skips older records."""
        try:
            found = await reader.offsets_for_times({tp: self._window_start_ms for tp in tps})
        except KafkaError as exc:
            logger.warning("offsets by time unavailable (%r): reading from the beginning", exc)
            await reader.seek_to_beginning(*tps)
            return
        for tp in tps:
            at = found.get(tp)
            if at is None:
                await reader.seek_to_end(tp)  # nothing in the window
            else:
                reader.seek(tp, at.offset)

    async def run(self) -> None:
        """Decisions and call events of the window (then ready), transcripts from their end."""
        s = self.settings
        reader = self.consumer = AIOKafkaConsumer(
            **self._kafka,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await reader.start()
        tps = {kind: await self._partitions(reader, self.topics[kind]) for kind in _KINDS}
        reader.assign([tp for group in tps.values() for tp in group])
        started = time.monotonic()
        self._window_start_ms = int((self.router.clock() - s.rebuild_window_h * 3600) * 1000)
        await self._seek_to_window(reader, [*tps["decisions"], *tps["calls"]])
        await reader.seek_to_end(*tps["transcripts"], *tps["workers"])
        deadline = started + s.rebuild_timeout_s
        rebuilt = 0
        pending = {*tps["decisions"], *tps["calls"]}
        heartbeats = self.topics["workers"]
        while True:
            batches = await reader.getmany(timeout_ms=100, max_records=500)
            if any(tp.topic != heartbeats for tp in batches):
                # workers' heartbeats (every 2 s) are not traffic: they would hold every fetch
                # on the short wait at idle (routing 5 % and the broker 13 % of a core)
                self.pacer.saw_records()
            self.pacer.apply(reader)
            count = 0
            for tp, records in batches.items():
                for raw in records:
                    applied = self._apply(tp.topic, raw)
                    count += 1
                    if applied and pending and tp.topic == self.topics["decisions"]:
                        rebuilt += 1
                    if count % YIELD_EVERY == 0:
                        await asyncio.sleep(0)
            if pending:
                for tp in list(pending):
                    high = reader.highwater(tp)
                    if high is not None and await reader.position(tp) >= high:
                        pending.discard(tp)
                if pending and time.monotonic() > deadline:
                    logger.error(
                        "decision state not rebuilt within %.0f s (%d partitions behind): "
                        "deciding and answering from what was read",
                        s.rebuild_timeout_s,
                        len(pending),
                    )
                    self.complete = False
                    pending.clear()
                    self._ready(rebuilt, started)
                elif not pending:
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

    def _apply(self, topic: str, raw: Any) -> bool:
        """Apply one record; False when it was skipped (our own, or before the window)."""
        if self.publisher.is_own(raw.headers):
            return False  # applied when we published it
        if raw.timestamp < self._window_start_ms and topic != self.topics["transcripts"]:
            return False  # before the rebuild window (a broker without a time index)
        parse = self.parser.parse
        if topic == self.topics["decisions"]:
            decision = parse("decisions", Decision, raw)
            if decision is not None:
                self.router.on_decision_record(decision)
                self.watermarks.poke(decision.call_sid)
        elif topic == self.topics["calls"]:
            event = parse("calls", CallEvent, raw, _WANTED_BY_READER)
            if event is None:
                return False
            if event.kind == "analysed":
                self.watermarks.on_event(event)
                return True
            self.router.on_observed_call_event(event)
            if event.kind in _WANTED_BY_EVALUATOR and self.owns(raw.key, raw.partition):
                self.router.on_call_event(event)
            if self.summaries is not None:
                # every call's facts: the owner at publishing time may not own it yet
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
        return True
