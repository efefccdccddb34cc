"""The socket class of every ingest connection: whole messages go straight to a callback.

websockets hands each message to the connection's handler task through a queue: one
``put``, one task wake-up and one ``recv`` per frame, about a third of ingest's CPU per frame
at 1,000 calls. A :class:`DirectConnection` whose ``on_message`` is set instead calls it
with each complete message while it reads the socket (in ``data_received``), so a media frame
is parsed and queued for Kafka without waking any task. Reading stays websockets' own: it
still parses and unmasks frames, answers pings and runs the closing handshake.

A message goes the usual way, through the queue to ``recv()``, when ``on_message`` is None,
when earlier messages are still queued (order is kept), for a fragmented message, and for a
text frame that is not UTF-8 (websockets then closes the socket with 1007, as before).
``on_message`` must not raise; it sets ``on_message`` back to None to stop taking messages.
"""

from __future__ import annotations

from collections.abc import Callable

from websockets.frames import Frame, Opcode
from websockets.protocol import Event

from ingest.http_post import HttpPostConnection


class DirectConnection(HttpPostConnection):
    """A server connection (``POST`` handshakes included) that can deliver messages directly."""

    on_message: Callable[[str | bytes], None] | None = None

    def process_event(self, event: Event) -> None:
        take = self.on_message
        if (
            take is not None
            and type(event) is Frame
            and event.fin
            and (event.opcode is Opcode.TEXT or event.opcode is Opcode.BINARY)
            and not self.recv_messages.frames.queue
        ):
            if event.opcode is Opcode.BINARY:
                take(bytes(event.data))
                return
            try:
                text = str(event.data, "utf-8")
            except UnicodeDecodeError:
                pass  # recv() fails the connection with 1007 and its reason
            else:
                take(text)
                return
        super().process_event(event)
