"""Messages taken straight from the socket's reader (ingest.direct), against the real broker.

The direct path must keep every message's order and meaning: bursts that arrive before the
handler runs, fragmented messages between whole ones, and a failure inside the handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect

from ingest.direct import DirectConnection
from ingest.outgoing import AUDIO, Outgoing
from ingest.sink import RecordSink
from tests.helpers import async_wait_until
from tests.integration.ingest.ingest_support import (
    connected,
    media,
    pcm,
    read_audio,
    read_calls,
    running_server,
    start,
    stop,
    ws_url,
)

pytestmark = pytest.mark.integration


async def _fragments(message: str, size: int) -> AsyncIterator[str]:
    for at in range(0, len(message), size):
        yield message[at : at + size]


async def test_bursts_and_fragmented_messages_keep_their_order(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    frames = [pcm(320, i) for i in range(60)]
    async with running_server(kafka_bootstrap, topic_prefix) as server:
        async with connect(ws_url(server), compression=None) as ws:
            # one burst: the first messages are read before the handler has run
            await ws.send(connected())
            await ws.send(start("CA-D", "ST-D"))
            for n, frame in enumerate(frames):
                message = media("ST-D", n + 2, n + 1, n * 20, frame)
                if n % 7 == 3:
                    await ws.send(_fragments(message, 100))  # a fragmented message
                else:
                    await ws.send(message)
                if n == 30:
                    await async_wait_until(lambda: server.stats.frames_in >= 20)
                    (call,) = server.live.all
                    assert isinstance(call.ws, DirectConnection)
                    assert call.ws.on_message is not None  # whole messages go direct
            await ws.send(stop("CA-D", "ST-D", len(frames) + 2))
            await ws.wait_closed()
            assert ws.close_code == 1000
        assert server.stats.frames_in == len(frames)
        assert server.stats.gaps == 0

    audio = await read_audio(kafka_bootstrap, topic_prefix, len(frames))
    assert [value for _, value, _ in audio] == frames
    assert [meta.sequence_number for _, _, meta in audio] == list(range(2, len(frames) + 2))
    calls = await read_calls(kafka_bootstrap, topic_prefix, 2)
    assert [c.kind for c in calls] == ["start", "stop"]


async def test_a_failure_in_one_call_closes_it_with_1011_and_spares_the_others(
    kafka_bootstrap: str, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = RecordSink.write

    def write(self: RecordSink, records: list[Outgoing]) -> None:
        if any(out.key == b"CA-BOOM" and out.topic_kind == AUDIO for out in records):
            records.clear()
            raise RuntimeError("a bug")
        real_write(self, records)

    monkeypatch.setattr(RecordSink, "write", write)
    frames = [pcm(320, i) for i in range(10)]
    async with running_server(kafka_bootstrap, topic_prefix) as server:
        async with (
            connect(ws_url(server), compression=None) as healthy,
            connect(ws_url(server), compression=None) as broken,
        ):
            await healthy.send(start("CA-OK", "ST-OK"))
            await broken.send(start("CA-BOOM", "ST-BOOM"))
            await broken.send(media("ST-BOOM", 2, 1, 0, frames[0]))
            await broken.wait_closed()
            assert broken.close_code == 1011
            for n, frame in enumerate(frames):
                await healthy.send(media("ST-OK", n + 2, n + 1, n * 20, frame))
            await healthy.send(stop("CA-OK", "ST-OK", len(frames) + 2))
            await healthy.wait_closed()
            assert healthy.close_code == 1000
        await async_wait_until(lambda: server.stats.active_calls == 0)

    audio = await read_audio(kafka_bootstrap, topic_prefix, len(frames))
    assert [value for key, value, _ in audio if key == b"CA-OK"] == frames
    calls = await read_calls(kafka_bootstrap, topic_prefix, 4)
    stops = {c.call_sid: c.stop_reason for c in calls if c.kind == "stop"}
    assert stops == {"CA-OK": "callended", "CA-BOOM": "internal_error"}


async def test_messages_after_the_stop_are_not_read(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with running_server(kafka_bootstrap, topic_prefix) as server:
        async with connect(ws_url(server), compression=None) as ws:
            await ws.send(start("CA-S", "ST-S"))
            await ws.send(media("ST-S", 2, 1, 0, pcm(320, 1)))
            await ws.send(stop("CA-S", "ST-S", 3))
            for n in range(5):  # the caller's side of a race with our close
                await ws.send(media("ST-S", n + 4, n + 2, (n + 1) * 20, pcm(320, n)))
            await ws.wait_closed()
            assert ws.close_code == 1000
        assert server.stats.frames_in == 1
        assert not server.stats.protocol_errors
        assert server.stats.deadletters == 0
