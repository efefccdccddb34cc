"""Escalation decisions -> handoff: send ``clear`` and close a voicebot call normally.

:class:`~ingest.decisions.DecisionFollower` reads the decisions; only the instance holding the
call's socket acts. Unreadable decision records become dead letters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from websockets.exceptions import ConnectionClosed

from ingest.live import CLOSE_NORMAL, LiveCalls, LiveConnection
from ingest.metrics import IngestStats
from ingest.outgoing import DEADLETTER, Outgoing
from ingest.sink import RecordSink
from schemas.deadletter import Source, dead_letter
from schemas.exotel import clear_message
from schemas.records import Decision

logger = logging.getLogger(__name__)


class Handoff:
    """Hands escalated voicebot calls to the next applet (``clear`` + normal close)."""

    def __init__(
        self,
        live: LiveCalls,
        sink: RecordSink,
        stats: IngestStats,
        clock: Callable[[], float],
        decisions_topic: str,
    ) -> None:
        self.live = live
        self.sink = sink
        self.stats = stats
        self.clock = clock
        self.decisions_topic = decisions_topic  # where bad decision records came from
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_escalate(self, decision: Decision) -> None:
        """Start the handoff without holding up the decisions consumer."""
        call = self.live.by_sid.get(decision.call_sid)
        if call is None or call.closing:
            return
        call.closing = True
        task = asyncio.get_running_loop().create_task(self._handoff(call, decision))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Wait for handoffs under way (shutdown)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handoff(self, call: LiveConnection, decision: Decision) -> None:
        session = call.session
        self.stats.handoffs += 1
        logger.info(
            "call_sid=%s stream_sid=%s handoff to agent (rule %s: %s)",
            session.call_sid,
            session.stream_sid,
            decision.rule_id,
            decision.reason,
        )
        params = {"reason": decision.reason}
        if decision.rule_id:
            params["rule_id"] = decision.rule_id
        if decision.target_group:
            params["target_group"] = decision.target_group
        session.record_handoff(params, self.clock())
        self.sink.write(session.outbox)
        session.end_reason = "handoff"
        try:
            await call.ws.send(clear_message(session.stream_sid).decode())
        except ConnectionClosed:
            return
        if call.upstream is not None:
            await call.upstream.close("handoff to agent")
        await call.ws.close(CLOSE_NORMAL, "handoff to agent")

    def bad_decision(self, raw: bytes, error: str, partition: int, offset: int) -> None:
        record = dead_letter(
            "ingest", error, raw=raw, source=Source(self.decisions_topic, partition, offset)
        )
        self.stats.deadletters += 1
        self.sink.write([Outgoing(DEADLETTER, b"", record.to_bytes(), self.clock())])
