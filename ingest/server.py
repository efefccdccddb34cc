"""The ingest app: the HTTP front door and the wiring of the WebSocket server's parts.

One asyncio (uvloop) process; ``agentstream ingest --processes N`` runs N of them on one
port (SO_REUSEPORT), each with its share of ``max_calls`` and, optionally, a port of its own
that answers only ``/health`` and ``/metrics``. Plain HTTP (``/health``, ``/metrics``,
``/exotel/stream-url``) and the handshake checks are answered here; each WebSocket goes to the
:class:`~ingest.connection.ConnectionHandler`, whose sessions return records for the
:class:`~ingest.sink.RecordSink` (it batches per partition and never blocks a handler). The
:class:`~ingest.sweeper.Sweeper` enforces timeouts, ``/voicebot`` calls are relayed by the
:class:`~ingest.voicebot.VoicebotRelay`, and escalations are handed off by
:class:`~ingest.handoff.Handoff`.
"""

from __future__ import annotations

import asyncio
import logging
import os
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
        self.stats.process_index = settings.process_index
        self.max_calls = settings.calls_per_process
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
        self._stats_server: Server | None = None
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
            if s.stats_port is not None:
                self._stats_server = await self._serve_stats(s.stats_port)
        except OSError:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
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
        # only when asked: a single process binds exactly as before
        extra: dict[str, Any] = {"reuse_port": True} if s.binds_reuse_port else {}
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
            **extra,
        )

    async def _serve_stats(self, port: int) -> Server:
        """This process's own port: ``/health`` and ``/metrics``, 404 for anything else."""
        return await serve(
            _no_socket,
            self.settings.host,
            port,
            process_request=self._process_stats_request,
            compression=None,
            open_timeout=5.0,
        )

    async def stop(self) -> None:
        """Graceful: refuse new calls, close live ones (1001), flush Kafka, stop."""
        if self._server is not None:
            self._server.close(close_connections=False)
        if self._stats_server is not None:
            self._stats_server.close()
        for call in list(self.live.all):
            call.close(CLOSE_GOING_AWAY, "server shutting down", "shutdown")
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), self.settings.shutdown_timeout_s)
            except TimeoutError:
                logger.warning("some connections did not close in time")
        if self._stats_server is not None:
            await self._stats_server.wait_closed()
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
        answer = self._stats_answer(path)
        if answer is not None:
            return answer
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
        if len(self.live) >= self.max_calls:
            self._refuse("capacity")
            return json_response(503, {"error": "too many concurrent calls"})
        return None

    def _refuse(self, reason: str) -> None:
        self.stats.refused[reason] += 1

    def _stats_answer(self, path: str) -> Response | None:
        if path == "/health":
            health: dict[str, Any] = {
                "status": "ok",
                "active_calls": self.stats.active_calls,
                "buffer_bytes": self.sink.buffered_bytes,
                "decisions_ready": self.decisions.ready,
            }
            if self.settings.process_index is not None:
                # which of the processes sharing the port answered
                health["process_index"] = self.settings.process_index
                health["pid"] = os.getpid()
            return json_response(200, health)
        if path == "/metrics":
            self.stats.buffer_bytes = self.sink.buffered_bytes
            return bytes_response(200, render(self.registry), "text/plain; version=0.0.4")
        return None

    def _process_stats_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path, _ = split_path(request.path)
        answer = self._stats_answer(path)
        return answer or json_response(404, {"error": f"only /health and /metrics, not {path!r}"})


async def _no_socket(ws: ServerConnection) -> None:
    """Never runs: the stats port answers every request before an upgrade."""
    await ws.close(CLOSE_GOING_AWAY)


def _remote_ip(connection: ServerConnection) -> str | None:
    address: Any = connection.remote_address
    if isinstance(address, tuple) and address:
        return str(address[0])
    return None


async def serve_forever(
    settings: IngestSettings,
    stop: asyncio.Event,
    on_ready: Callable[[], None] | None = None,
) -> IngestStats:
    """Run until ``stop`` is set, then shut down gracefully; returns the final counters.

    ``on_ready`` runs once the server listens (a process of several tells its supervisor).
    """
    server = IngestServer(settings)
    await server.start()
    where = f"metrics http://{settings.host}:{server.port}/metrics"
    if settings.process_index is not None:
        where = f"process {settings.process_index}, pid {os.getpid()}, {where}"
        if settings.stats_port is not None:
            where += f" and :{settings.stats_port}/metrics"
    print(
        f"ingest listening on ws://{settings.host}:{server.port}/stream and /voicebot ({where})",
        flush=True,
    )
    if on_ready is not None:
        on_ready()
    try:
        await stop.wait()
    finally:
        await server.stop()
    return server.stats
