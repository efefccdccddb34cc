"""The timeout sweeper: first-message, idle and session-cap timeouts for every live call.

One task checks every call each ``sweep_interval_s`` (cheaper than one timer per message).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ingest.live import CLOSE_NORMAL, CLOSE_POLICY, LiveCalls
from ingest.metrics import IngestStats
from ingest.settings import IngestSettings
from ingest.sink import RecordSink


class Sweeper:
    """Closes calls past a timeout; also refreshes the buffer gauge."""

    def __init__(
        self,
        settings: IngestSettings,
        live: LiveCalls,
        sink: RecordSink,
        stats: IngestStats,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.live = live
        self.sink = sink
        self.stats = stats
        self.clock = clock

    async def run(self) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(s.sweep_interval_s)
            self.sweep()

    def sweep(self) -> None:
        s = self.settings
        self.stats.buffer_bytes = self.sink.buffered_bytes
        now = self.clock()
        for call in list(self.live.all):
            if call.closing:
                continue
            session = call.session
            if session.started_at is None:
                if now - session.opened_at > s.first_message_timeout_s:
                    self.stats.protocol_errors[CLOSE_POLICY] += 1
                    call.close(CLOSE_POLICY, "no start within timeout", "timeout")
            elif now - session.started_at > s.session_cap_s:
                call.close(CLOSE_NORMAL, "session cap reached", "session_cap")
            elif now - session.last_media_at > s.idle_timeout_s:
                call.close(CLOSE_NORMAL, "no media within idle timeout", "timeout")
