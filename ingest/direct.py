"""The socket class of every ingest connection: whole messages go straight to a callback.

websockets hands each message to the connection's handler task through a queue: one
``put``, one task wake-up and one ``recv`` per frame, about a third of ingest's CPU per frame
at 1,000 calls. A :class:`DirectConnection` whose ``on_message`` is set instead calls it
with each complete message while it reads the socket (in ``data_received``), so a media frame
is parsed and queued for Kafka without waking any task.

Reading a frame. While websockets' own parser waits at a frame boundary (nothing buffered, no
fragmented message open), ``data_received`` reads the whole unfragmented, masked TEXT and
BINARY frames at the head of the bytes itself: a header walk and websockets' C unmasking
instead of its generator-based parser (63-64 instead of 75-79 us of ingest CPU per frame at
1,000 calls, ``bench/ingest.py``). The first byte it does not take
(a control frame, a fragment, reserved bits, a frame over the size limit, a text frame that is
not UTF-8, or a frame cut by the read) and everything after it go to websockets, which parses
them as before: it answers pings, runs the closing handshake and fails bad frames with its
close codes. Once that frame is through, websockets is at a boundary again.

A message goes the usual way, through the queue to ``recv()``, when ``on_message`` is None,
when earlier messages are still queued (order is kept), for a fragmented message, and for a
text frame that is not UTF-8 (websockets then closes the socket with 1007, as before).
``on_message`` must not raise; it sets ``on_message`` back to None to stop taking messages.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, Event
from websockets.streams import StreamReader

from ingest.http_post import HttpPostConnection

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a websockets build without its C speedups
    from websockets.utils import apply_mask

_AT_EOF = StreamReader.at_eof.__code__  # where websockets' parser waits between frames
_FIN_TEXT, _FIN_BINARY = 0x80 | Opcode.TEXT.value, 0x80 | Opcode.BINARY.value


def at_frame_boundary(parser: Generator[None] | None) -> bool:
    """Whether websockets' parser is waiting for the first byte of a frame: the innermost
    generator it delegates to is ``StreamReader.at_eof`` (as in websockets 13 to 17)."""
    inner: Any = parser
    while inner is not None:
        waiting = inner.gi_yieldfrom
        if waiting is None:
            return bool(inner.gi_code is _AT_EOF)
        inner = waiting
    return False


class DirectConnection(HttpPostConnection):
    """A server connection (``POST`` handshakes included) that can deliver messages directly."""

    on_message: Callable[[str | bytes], None] | None = None

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        if (
            self.on_message is not None
            and protocol.state is OPEN
            and getattr(protocol, "current_size", 0) is None  # 0: a websockets without it
            and not protocol.reader.buffer
            and not self.recv_messages.frames.queue
            and at_frame_boundary(getattr(protocol, "parser", None))
        ):
            taken = self._take_frames(data)
            if taken == len(data):
                return
            if taken:
                data = data[taken:]
        super().data_received(data)

    def _take_frames(self, data: bytes) -> int:
        """Deliver the whole data frames at the head of ``data``; how many bytes they took."""
        max_size = getattr(self.protocol, "max_message_size", -1)
        if max_size == -1:
            return 0  # a websockets that names its limit otherwise: its own parser reads all
        view = memoryview(data)
        end = len(data)
        at = 0
        while end - at >= 6:
            first, second = data[at], data[at + 1]
            if (first != _FIN_TEXT and first != _FIN_BINARY) or not second & 0x80:
                break  # control frame, fragment, reserved bits or an unmasked frame
            length = second & 0x7F
            head = at + 2
            if length == 126:
                length = int.from_bytes(data[head : head + 2], "big")
                head += 2
            elif length == 127:
                length = int.from_bytes(data[head : head + 8], "big")
                head += 8
            stop = head + 4 + length  # past ``end`` also when the length bytes were cut
            if stop > end or (max_size is not None and length > max_size):
                break  # cut by this read (websockets buffers it), or over the limit
            payload = apply_mask(view[head + 4 : stop], data[head : head + 4])
            if first == _FIN_TEXT:
                try:
                    message: str | bytes = payload.decode("utf-8")
                except UnicodeDecodeError:
                    break  # websockets fails the connection with 1007 and its reason
            else:
                message = payload
            take = self.on_message
            if take is None:
                break
            take(message)
            at = stop
            if self.recv_messages.frames.queue:
                break  # the handler asked for recv() order again
        return at

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
