"""The direct frame reader (ingest.direct) against real sockets and hand-made frames.

Whole masked TEXT/BINARY frames are read by the connection itself while websockets' parser
waits at a frame boundary; everything else must reach websockets exactly as before: frames cut
by the reads, pings between messages, fragments, bad UTF-8, oversized and unmasked frames.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from ingest.direct import DirectConnection
from tests.helpers import async_wait_until

MAX_SIZE = 4096


def frame(payload: bytes, opcode: int = 1, *, fin: bool = True, masked: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Received:
    def __init__(self) -> None:
        self.direct: list[str | bytes] = []  # taken by on_message
        self.queued: list[str | bytes] = []  # came through recv()
        self.taken_bytes = 0
        self.closed = asyncio.Event()


@asynccontextmanager
async def server(got: Received, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, int]]:
    real = DirectConnection._take_frames

    def counting(self: DirectConnection, data: bytes) -> int:
        taken = real(self, data)
        got.taken_bytes += taken
        return taken

    monkeypatch.setattr(DirectConnection, "_take_frames", counting)

    async def handler(ws: ServerConnection) -> None:
        assert isinstance(ws, DirectConnection)
        ws.on_message = got.direct.append
        try:
            async for message in ws:
                got.queued.append(message)
        except ConnectionClosed:
            pass  # the raw client just goes
        finally:
            got.closed.set()

    async with serve(
        handler,
        "127.0.0.1",
        0,
        compression=None,
        max_size=MAX_SIZE,
        ping_interval=None,
        create_connection=DirectConnection,
    ) as srv:
        host, port = next(iter(srv.sockets)).getsockname()[:2]
        yield host, port


@asynccontextmanager
async def raw_client(
    host: str, port: int
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /stream HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = await reader.readuntil(b"\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 101")
    try:
        yield reader, writer
    finally:
        writer.close()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    n = second & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(n)


async def close_code(reader: asyncio.StreamReader) -> int:
    opcode, payload = await asyncio.wait_for(read_frame(reader), 10)
    assert opcode == 8
    return int(struct.unpack("!H", payload[:2])[0])


def messages(n: int) -> list[str]:
    """JSON texts of varied sizes (a few use the 16-bit length form)."""
    return [f'{{"event":"media","seq":{i},"pad":"{"x" * (i * 37 % 300)}"}}' for i in range(n)]


async def test_frames_in_one_read_are_taken_directly_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    got = Received()
    sent = messages(40)
    async with server(got, monkeypatch) as (host, port), raw_client(host, port) as (_, writer):
        writer.write(b"".join(frame(m.encode()) for m in sent) + frame(b"\x00\x01", 2))
        await writer.drain()
        await async_wait_until(lambda: len(got.direct) > len(sent), interval=0.01)
    assert got.direct == [*sent, b"\x00\x01"]
    assert got.queued == []
    assert got.taken_bytes > 0  # the connection's own reader took them


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1000])
async def test_frames_cut_by_the_reads_keep_their_order(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    got = Received()
    sent = messages(25)
    stream = b"".join(frame(m.encode()) for m in sent)
    async with server(got, monkeypatch) as (host, port), raw_client(host, port) as (_, writer):
        for at in range(0, len(stream), chunk):
            writer.write(stream[at : at + chunk])
            await writer.drain()
            if at // chunk % 5 == 0:
                await asyncio.sleep(0.001)  # let the server read a cut frame
        await async_wait_until(lambda: len(got.direct) + len(got.queued) >= len(sent))
    assert got.direct + got.queued == sent
    assert got.queued == []


async def test_pings_and_fragments_between_messages_reach_websockets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    got = Received()
    async with server(got, monkeypatch) as (host, port), raw_client(host, port) as (r, w):
        w.write(
            frame(b"one")
            + frame(b"are you there", 9)  # ping
            + frame(b"two")
            + frame(b"thr", 1, fin=False)  # a fragmented message: websockets assembles it
            + frame(b"ee", 0)
            + frame(b"four")
        )
        await w.drain()
        opcode, payload = await asyncio.wait_for(read_frame(r), 10)
        assert (opcode, payload) == (10, b"are you there")  # pong
        await async_wait_until(lambda: len(got.direct) + len(got.queued) >= 4)
    assert got.direct == ["one", "two"]
    assert got.queued == ["three", "four"]  # through recv(); "four" waited behind "three"


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(b"\xff\xfe not utf-8"), 1007),
        (frame(b"x" * (MAX_SIZE + 1)), 1009),
        (frame(b"unmasked", masked=False), 1002),
        (frame(b"reserved bits", 0x41), 1002),
    ],
)
async def test_bad_frames_get_websockets_close_codes(
    monkeypatch: pytest.MonkeyPatch, bad: bytes, code: int
) -> None:
    got = Received()
    async with server(got, monkeypatch) as (host, port), raw_client(host, port) as (r, w):
        w.write(frame(b"fine") + bad + frame(b"never read"))
        await w.drain()
        assert await close_code(r) == code
        w.close()  # after failing, websockets waits for the TCP close
        await asyncio.wait_for(got.closed.wait(), 10)
    assert got.direct == ["fine"]
    assert "never read" not in got.queued
