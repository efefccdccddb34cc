"""The ingest WebSocket server: Exotel Stream/Voicebot sockets in, Kafka records out.

One asyncio (uvloop) process. Each connection gets a :class:`CallSession`; its records go to
the :class:`KafkaSink`, which batches per partition and never blocks a handler. A sweeper
task enforces the first-message, idle and session-cap timeouts for every call at once
(cheaper than one timer per message). ``/voicebot`` calls are relayed to an upstream bot when
one is configured and handed off (``clear`` + normal close) on an escalation decision.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ingest.decisions import DecisionFollower
from ingest.http import WS_PATHS, Gate, bytes_response, json_response, split_path
from ingest.metrics import IngestStats, make_registry, render
from ingest.session import CallSession
from ingest.settings import IngestSettings
from ingest.sink import KafkaSink
from ingest.voicebot import UpstreamBot, UpstreamError
from schemas.errors import ProtocolError
from schemas.exotel import StartEvent, clear_message
from schemas.records import DeadLetter, Decision

logger = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011


class Call:
    """A live connection: its socket, its session and (voicebot) its upstream bot."""

    __slots__ = ("ws", "session", "upstream", "held", "closing")

    def __init__(self, ws: ServerConnection, session: CallSession) -> None:
        self.ws = ws
        self.session = session
        self.upstream: UpstreamBot | None = None
        self.held: list[str] = []  # voicebot messages before start, for the upstream bot
        self.closing = False


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
        self.sink = KafkaSink(settings, self.stats, clock=clock)
        self.calls: set[Call] = set()
        self.by_sid: dict[str, Call] = {}
        self.decisions = DecisionFollower(settings, self._on_escalate, self._bad_decision)
        self._server: Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._handoffs: set[asyncio.Task[None]] = set()
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
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        logger.info("ingest listening on %s:%d", s.host, self.port)

    async def _serve(self) -> Server:
        s = self.settings
        return await serve(
            self._handle,
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
        )

    async def stop(self) -> None:
        """Graceful: refuse new calls, close live ones (1001), flush Kafka, stop."""
        if self._server is not None:
            self._server.close(close_connections=False)
        for call in list(self.calls):
            self._close(call, CLOSE_GOING_AWAY, "server shutting down", "shutdown")
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), self.settings.shutdown_timeout_s)
            except TimeoutError:
                logger.warning("some connections did not close in time")
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.decisions.stop()
        await asyncio.gather(*self._handoffs, return_exceptions=True)
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
            return refused or self.gate.stream_url(request, query)
        if path not in WS_PATHS:
            return json_response(404, {"error": f"no such path {path!r}"})
        refused = self.gate.check(remote, auth, self._refuse)
        if refused is not None:
            return refused
        if len(self.calls) >= self.settings.max_calls:
            self._refuse("capacity")
            return json_response(503, {"error": "too many concurrent calls"})
        return None

    def _refuse(self, reason: str) -> None:
        self.stats.refused[reason] += 1

    # --- one connection -----------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        path, query = split_path(ws.request.path if ws.request else "/stream")
        session = CallSession(self.sink, self.stats, path.lstrip("/"), query, clock=self.clock)
        call = Call(ws, session)
        voicebot = path == "/voicebot"
        self.calls.add(call)
        stats = self.stats
        stats.active_calls += 1
        stats.calls_total += 1
        raw: str | bytes = b""
        try:
            async for raw in ws:
                read_at = self.clock()
                event = session.on_message(raw, read_at)
                if voicebot:
                    await self._voicebot_message(call, raw, event)
                if session.stopped:
                    self._close(call, CLOSE_NORMAL, "stream stopped", None)
                    break
        except ProtocolError as exc:
            self._protocol_error(call, raw, exc.close_code, exc.reason)
        except ConnectionClosed as exc:
            sent = exc.sent
            if sent is not None and sent.code in (1002, 1007, 1009) and not call.closing:
                # websockets refused the frame itself (too big, bad UTF-8, bad framing)
                self._protocol_error(call, b"", sent.code, sent.reason or "bad frame")
        finally:
            if session.started and session.call_sid is not None:
                self.by_sid.pop(session.call_sid, None)
            session.end(self.clock())
            if call.upstream is not None:
                await call.upstream.close("caller stream ended")
            self.calls.discard(call)
            stats.active_calls -= 1
            await ws.wait_closed()
            code = ws.close_code if ws.close_code is not None else 1006
            stats.closes[code] += 1

    def _protocol_error(self, call: Call, raw: str | bytes, code: int, reason: str) -> None:
        session = call.session
        self.stats.protocol_errors[code] += 1
        logger.warning(
            "call_sid=%s stream_sid=%s closing %d: %s",
            session.call_sid,
            session.stream_sid,
            code,
            reason,
        )
        session.dead_letter(raw, reason, self.clock())
        session.end_reason = session.end_reason or "protocol_error"
        self._close(call, code, reason, None)

    def _close(self, call: Call, code: int, reason: str, end_reason: str | None) -> None:
        """Close the Exotel socket without awaiting (the handler's finally does the rest)."""
        if call.closing:
            return
        call.closing = True
        if end_reason is not None and call.session.end_reason is None:
            call.session.end_reason = end_reason
        # WebSocket close reasons are limited to 123 bytes
        short = reason.encode()[:120].decode("utf-8", "ignore")
        asyncio.get_running_loop().create_task(call.ws.close(code, short))

    # --- voicebot -----------------------------------------------------------------------------

    async def _voicebot_message(self, call: Call, raw: str | bytes, event: object) -> None:
        session = call.session
        if isinstance(event, StartEvent):
            if session.call_sid is not None:
                self.by_sid[session.call_sid] = call
            url = self.settings.upstream_for(session.tenant)
            if url is None:
                return
            bot = UpstreamBot(
                url,
                call.ws.send,
                lambda: self._bot_closed(call),
                self.settings.upstream_open_timeout_s,
                self.settings.max_message_bytes,
            )
            try:
                await bot.open([*call.held, str(raw)])
            except UpstreamError as exc:
                logger.error("call_sid=%s %s", session.call_sid, exc)
                self._close(call, CLOSE_INTERNAL, "upstream bot unavailable", "upstream_error")
                return
            call.upstream = bot
            call.held.clear()
        elif call.upstream is not None:
            await call.upstream.send(raw)
        elif not session.started and isinstance(raw, str):
            call.held.append(raw)

    async def _bot_closed(self, call: Call) -> None:
        logger.info("call_sid=%s upstream bot closed: ending the stream", call.session.call_sid)
        self._close(call, CLOSE_NORMAL, "bot ended the stream", "bot_closed")

    async def _on_escalate(self, decision: Decision) -> None:
        """Start the handoff without holding up the decisions consumer."""
        call = self.by_sid.get(decision.call_sid)
        if call is None or call.closing:
            return
        call.closing = True
        task = asyncio.get_running_loop().create_task(self._handoff(call, decision))
        self._handoffs.add(task)
        task.add_done_callback(self._handoffs.discard)

    async def _handoff(self, call: Call, decision: Decision) -> None:
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
        session.end_reason = "handoff"
        try:
            await call.ws.send(clear_message(session.stream_sid).decode())
        except ConnectionClosed:
            return
        if call.upstream is not None:
            await call.upstream.close("handoff to agent")
        await call.ws.close(CLOSE_NORMAL, "handoff to agent")

    def _bad_decision(self, raw: bytes, error: str, partition: int, offset: int) -> None:
        import base64  # noqa: PLC0415

        record = DeadLetter(
            stage="ingest",
            error=error,
            source_topic=self.decisions.topic,
            source_partition=partition,
            source_offset=offset,
            raw_base64=base64.b64encode(raw).decode("ascii"),
            occurred_at_ms=time.time_ns() // 1_000_000,
        )
        self.stats.deadletters += 1
        self.sink.send_record(self.sink.deadletter_topic, b"", record.to_bytes(), self.clock())

    # --- timeouts -----------------------------------------------------------------------------

    async def _sweep(self) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(s.sweep_interval_s)
            self.stats.buffer_bytes = self.sink.buffered_bytes
            now = self.clock()
            for call in list(self.calls):
                if call.closing:
                    continue
                session = call.session
                if session.started_at is None:
                    if now - session.opened_at > s.first_message_timeout_s:
                        self.stats.protocol_errors[CLOSE_POLICY] += 1
                        self._close(call, CLOSE_POLICY, "no start within timeout", "timeout")
                elif now - session.started_at > s.session_cap_s:
                    self._close(call, CLOSE_NORMAL, "session cap reached", "session_cap")
                elif now - session.last_media_at > s.idle_timeout_s:
                    self._close(call, CLOSE_NORMAL, "no media within idle timeout", "timeout")


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
