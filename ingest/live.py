"""The calls connected now: one :class:`LiveConnection` per socket, and the set of them.

Shared by the connection handler, the Voicebot relay, the handoff and the sweeper, which all
close sockets the same way: :meth:`LiveConnection.close`, without awaiting.
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection

from ingest.session import StreamSession
from ingest.upstream import UpstreamBot

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011


class LiveConnection:
    """One connected Exotel socket: its session and (voicebot) its upstream bot.

    Owned by the ingest process that holds the socket; gone when the socket closes.
    """

    __slots__ = ("ws", "session", "upstream", "held", "closing")

    def __init__(self, ws: ServerConnection, session: StreamSession) -> None:
        self.ws = ws
        self.session = session
        self.upstream: UpstreamBot | None = None
        self.held: list[str] = []  # voicebot messages before start, for the upstream bot
        self.closing = False

    def close(self, code: int, reason: str, end_reason: str | None) -> None:
        """Close the Exotel socket without awaiting (the handler's finally does the rest)."""
        if self.closing:
            return
        self.closing = True
        if end_reason is not None and self.session.end_reason is None:
            self.session.end_reason = end_reason
        # WebSocket close reasons are limited to 123 bytes
        short = reason.encode()[:120].decode("utf-8", "ignore")
        asyncio.get_running_loop().create_task(self.ws.close(code, short))


class LiveCalls:
    """Every live connection, and the voicebot ones by call SID (for handoffs)."""

    def __init__(self) -> None:
        self.all: set[LiveConnection] = set()
        self.by_sid: dict[str, LiveConnection] = {}

    def __len__(self) -> int:
        return len(self.all)
