"""POST on the WebSocket port: Exotel may fetch the dynamic stream URL with POST.

websockets' server reads only ``GET`` requests (a WebSocket handshake has no body). This
connection class swaps the handshake parser of each new connection for one that also reads
a ``POST`` with a small body (form or JSON): the body's fields are merged into the request's
query, so ``process_request`` answers both the same way. Everything after the request line
and headers is websockets' own parser.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any
from urllib.parse import urlencode

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import InvalidMessage
from websockets.http11 import Request, parse_headers, parse_line
from websockets.protocol import Protocol
from websockets.server import ServerProtocol

MAX_POST_BODY_BYTES = 16 * 1024


@dataclasses.dataclass
class PostRequest(Request):
    """A ``POST`` request; its body's fields are already merged into ``path``'s query."""

    method: str = "POST"


class HttpPostConnection(ServerConnection):
    """A ServerConnection whose handshake parser also accepts ``POST`` (see module doc)."""

    def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
        protocol.parser = _parse(protocol)
        next(protocol.parser)
        super().__init__(protocol, *args, **kwargs)


def _parse(protocol: ServerProtocol) -> Generator[None]:
    """ServerProtocol.parse, with ``POST`` allowed (websockets 15)."""
    read_line = protocol.reader.read_line
    try:
        request_line = yield from parse_line(read_line)
        method, raw_path, version = request_line.split(b" ", 2)
        if version != b"HTTP/1.1" or method not in (b"GET", b"POST"):
            raise ValueError(f"unsupported request line: {request_line[:80]!r}")
        path = raw_path.decode("ascii", "surrogateescape")
        headers = yield from parse_headers(read_line)
        if "Transfer-Encoding" in headers:
            raise ValueError("transfer codings aren't supported")
        request: Request
        if method == b"POST":
            length = int(headers.get("Content-Length", "0") or "0")
            if not 0 <= length <= MAX_POST_BODY_BYTES:
                raise ValueError(f"POST body of {length} bytes")
            body = yield from protocol.reader.read_exact(length)
            request = PostRequest(_merge_body(path, body, headers.get("Content-Type", "")), headers)
        else:
            if "Content-Length" in headers:
                raise ValueError("unsupported request body")
            request = Request(path, headers)
    except Exception as exc:  # noqa: BLE001 - websockets turns any parse failure into a 400
        protocol.handshake_exc = InvalidMessage("did not receive a valid HTTP request")
        protocol.handshake_exc.__cause__ = exc
        protocol.send_eof()
        protocol.parser = protocol.discard()
        next(protocol.parser)
        yield
        return
    protocol.events.append(request)
    yield from Protocol.parse(protocol)


def _merge_body(path: str, body: bytes | bytearray, content_type: str) -> str:
    """``path`` with the body's fields (form, or a flat JSON object) added to its query."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return path
    if "json" in content_type.lower() or text.startswith("{"):
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            return path
        if not isinstance(data, dict):
            return path
        text = urlencode(
            {str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in data.items()}
        )
    return f"{path}{'&' if '?' in path else '?'}{text}"
