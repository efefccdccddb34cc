"""The per-connection handler: read an Exotel socket, feed its session, write what it returns.

Hot path: one ``on_message`` and (when it returned records) one ``sink.write`` per frame, run
by the socket's reader itself (:mod:`ingest.direct`) for stream calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ingest.direct import DirectConnection
from ingest.http import split_path
from ingest.live import CLOSE_INTERNAL, CLOSE_NORMAL, LiveCalls, LiveConnection
from ingest.metrics import IngestStats
from ingest.session import StreamSession, TooManyBadFrames
from ingest.sink import RecordSink
from ingest.voicebot import VoicebotRelay
from schemas.errors import ProtocolError

logger = logging.getLogger(__name__)


class ConnectionHandler:
    """Runs one connection from accept to close (the websockets ``handler``)."""

    def __init__(
        self,
        live: LiveCalls,
        sink: RecordSink,
        stats: IngestStats,
        relay: VoicebotRelay,
        clock: Callable[[], float],
        max_bad_frames: int = 50,
    ) -> None:
        self.live = live
        self.sink = sink
        self.stats = stats
        self.relay = relay
        self.clock = clock
        self.max_bad_frames = max_bad_frames

    async def __call__(self, ws: ServerConnection) -> None:
        path, query = split_path(ws.request.path if ws.request else "/stream")
        session = StreamSession(
            self.stats,
            path.lstrip("/"),
            query,
            clock=self.clock,
            max_bad_frames=self.max_bad_frames,
        )
        call = LiveConnection(ws, session)
        voicebot = path == "/voicebot"
        live = self.live
        live.all.add(call)
        stats = self.stats
        stats.active_calls += 1
        stats.calls_total += 1
        clock = self.clock
        outbox = session.outbox
        write = self.sink.write

        def take(raw: str | bytes) -> bool:
            """One message of a stream (not voicebot) call; False once the socket closes."""
            try:
                session.on_message(raw, clock())
                if outbox:
                    write(outbox)
            except ProtocolError as exc:
                self._protocol_error(call, raw, exc.close_code, exc.reason, exc)
                return False
            if session.stopped:
                call.close(CLOSE_NORMAL, "stream stopped", None)
                return False
            return True

        direct = ws if isinstance(ws, DirectConnection) and not voicebot else None
        if direct is not None:
            direct.on_message = self._direct(direct, call, take)
        raw: str | bytes = b""
        try:
            # what the direct path left: messages queued before it was set, fragmented ones,
            # and every voicebot message (its relay awaits)
            async for raw in ws:
                if not voicebot:
                    # after a stop nothing more is read (a frame queued behind it is not an error)
                    if session.stopped or not take(raw):
                        break
                    continue
                event = session.on_message(raw, clock())
                if outbox:
                    write(outbox)
                await self.relay.on_message(call, raw, event)
                if session.stopped:
                    call.close(CLOSE_NORMAL, "stream stopped", None)
                    break
        except ProtocolError as exc:
            self._protocol_error(call, raw, exc.close_code, exc.reason, exc)
        except ConnectionClosed as exc:
            sent = exc.sent
            if sent is not None and sent.code in (1002, 1007, 1009) and not call.closing:
                # websockets refused the frame itself (too big, bad UTF-8, bad framing)
                self._protocol_error(call, b"", sent.code, sent.reason or "bad frame")
        finally:
            if direct is not None:
                direct.on_message = None
            # a reconnect of the call may have taken the entry since: leave it to that socket
            if session.call_sid is not None and live.by_sid.get(session.call_sid) is call:
                del live.by_sid[session.call_sid]
            session.end(clock())
            write(outbox)
            if call.upstream is not None:
                await call.upstream.close("caller stream ended")
            live.all.discard(call)
            stats.active_calls -= 1
            await ws.wait_closed()
            code = ws.close_code if ws.close_code is not None else 1006
            stats.count_close(code)

    @staticmethod
    def _direct(
        ws: DirectConnection, call: LiveConnection, take: Callable[[str | bytes], bool]
    ) -> Callable[[str | bytes], None]:
        """``take`` as the socket's ``on_message``: it stops the direct path once the socket
        closes, and turns an unexpected error into a 1011 close instead of raising into
        websockets' reader."""

        def on_message(raw: str | bytes) -> None:
            try:
                if take(raw):
                    return
            except Exception:  # noqa: BLE001 - the socket's reader must go on
                logger.exception("call_sid=%s message failed", call.session.call_sid)
                call.close(CLOSE_INTERNAL, "internal error", "internal_error")
            ws.on_message = None

        return on_message

    def _protocol_error(
        self,
        call: LiveConnection,
        raw: str | bytes,
        code: int,
        reason: str,
        error: ProtocolError | None = None,
    ) -> None:
        session = call.session
        self.stats.protocol_errors[code] += 1
        logger.warning(
            "call_sid=%s stream_sid=%s closing %d: %s",
            session.call_sid,
            session.stream_sid,
            code,
            reason,
        )
        if not isinstance(error, TooManyBadFrames):  # those were dead-lettered one by one
            session.dead_letter(raw, reason, self.clock())
            self.sink.write(session.outbox)
        session.end_reason = session.end_reason or "protocol_error"
        call.close(code, reason, None)
