"""The ingest app: the HTTP front door and the wiring of the WebSocket server's parts.

One asyncio (uvloop) process. Plain HTTP (``/health``, ``/metrics``, ``/exotel/stream-url``)
and the handshake checks are answered here; each WebSocket goes to the
:class:`~ingest.connection.ConnectionHandler`, whose sessions return records for the
:class:`~ingest.sink.RecordSink` (it batches per partition and never blocks a handler). The
:class:`~ingest.sweeper.Sweeper` enforces timeouts, ``/voicebot`` calls are relayed by the
:class:`~ingest.voicebot.VoicebotRelay`, and escalations are handed off by
:class:`~ingest.handoff.Handoff`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from ingest.connection import ConnectionHandler
from ingest.decisions import DecisionFollower
from ingest.direct import DirectConnection
from ingest.handoff import Handoff
from ingest.http import WS_PATHS, Gate, bytes_response, json_response, split_path
from ingest.http_post import PostRequest
from ingest.live import CLOSE_GOING_AWAY, LiveCalls
from ingest.metrics import IngestStats, make_registry, render
from ingest.settings import IngestSettings
from ingest.sink import RecordSink
from ingest.sweeper import Sweeper
from ingest.voicebot import VoicebotRelay
from schemas.topics import DECISIONS, prefixed

logger = logging.getLogger(__name__)


class IngestServer:
    """Build with settings, ``await start()``, ``await stop()`` (or ``async with``)."""

    def __init__(
        self,
        settings: IngestSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.stats = IngestStats()
        self.registry = make_registry(self.stats)
        self.gate = Gate(settings)
        self.sink = RecordSink(settings, self.stats, clock=clock)
        self.live = LiveCalls()
        self.handoff = Handoff(
            self.live,
            self.sink,
            self.stats,
            clock,
            prefixed(DECISIONS, settings.topic_prefix),
        )
        self.decisions = DecisionFollower(
            settings,
            self.handoff.on_escalate,
            self.handoff.bad_decision,
            busy=lambda: bool(self.live.by_sid),
        )
        self.handler = ConnectionHandler(
            self.live,
            self.sink,
            self.stats,
            VoicebotRelay(settings, self.live, self.stats),
            clock,
            settings.max_bad_frames,
        )
        self.sweeper = Sweeper(settings, self.live, self.sink, self.stats, clock)
        self._server: Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = settings.port

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        if not self.gate.auth_enabled:
            logger.warning(
                "Basic auth is OFF: set AGENTSTREAM_INGEST_BASIC_AUTH=KEY:TOKEN before exposing "
                "this server to the internet"
            )
        await self.sink.start()
        if s.handoff_enabled:
            self.decisions.start()
        try:
            self._server = await self._serve()
        except OSError:
            await self.decisions.stop()
            await self.sink.stop(0.0)
            raise
        sockets = list(self._server.sockets)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self._sweeper = asyncio.get_running_loop().create_task(self.sweeper.run())
        logger.info("ingest listening on %s:%d", s.host, self.port)

    async def _serve(self) -> Server:
        s = self.settings
        return await serve(
            self.handler,
            s.host,
            s.port,
            process_request=self._process_request,
            max_size=s.max_message_bytes,
            max_queue=64,
            compression=None,
            open_timeout=s.first_message_timeout_s,
            ping_interval=s.ping_interval_s,
            ping_timeout=s.ping_timeout_s,
            close_timeout=5.0,
            create_connection=DirectConnection,
        )

    async def stop(self) -> None:
        """Graceful: refuse new calls, close live ones (1001), flush Kafka, stop."""
        if self._server is not None:
            self._server.close(close_connections=False)
        for call in list(self.live.all):
            call.close(CLOSE_GOING_AWAY, "server shutting down", "shutdown")
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), self.settings.shutdown_timeout_s)
            except TimeoutError:
                logger.warning("some connections did not close in time")
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.decisions.stop()
        await self.handoff.wait()
        await self.sink.stop(self.settings.shutdown_timeout_s)
        logger.info(
            "ingest stopped: %d frames in, %d acked, %d dropped",
            self.stats.frames_in,
            self.stats.frames_acked,
            self.stats.frames_dropped,
        )

    async def __aenter__(self) -> IngestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- plain HTTP and handshake checks ------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path, query = split_path(request.path)
        remote = _remote_ip(connection)
        if path == "/health":
            return json_response(
                200,
                {
                    "status": "ok",
                    "active_calls": self.stats.active_calls,
                    "buffer_bytes": self.sink.buffered_bytes,
                    "decisions_ready": self.decisions.ready,
                },
            )
        if path == "/metrics":
            self.stats.buffer_bytes = self.sink.buffered_bytes
            return bytes_response(200, render(self.registry), "text/plain; version=0.0.4")
        auth = request.headers.get("Authorization")
        if path == "/exotel/stream-url":
            refused = self.gate.check(remote, auth, self._refuse)
            return refused or self.gate.stream_url(request, query, auth)
        if isinstance(request, PostRequest):
            return json_response(405, {"error": f"POST is not allowed on {path!r}"})
        if path not in WS_PATHS:
            return json_response(404, {"error": f"no such path {path!r}"})
        refused = self.gate.check(remote, auth, self._refuse)
        if refused is not None:
            return refused
        if len(self.live) >= self.settings.max_calls:
            self._refuse("capacity")
            return json_response(503, {"error": "too many concurrent calls"})
        return None

    def _refuse(self, reason: str) -> None:
        self.stats.refused[reason] += 1


def _remote_ip(connection: ServerConnection) -> str | None:
    address: Any = connection.remote_address
    if isinstance(address, tuple) and address:
        return str(address[0])
    return None


async def serve_forever(settings: IngestSettings, stop: asyncio.Event) -> IngestStats:
    """Run until ``stop`` is set, then shut down gracefully; returns the final counters."""
    server = IngestServer(settings)
    await server.start()
    print(
        f"ingest listening on ws://{settings.host}:{server.port}/stream and /voicebot "
        f"(metrics http://{settings.host}:{server.port}/metrics)",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await server.stop()
    return server.stats
