"""Broker trouble: frames buffered while Kafka is down reach the new broker, in order.

tansu keeps everything in memory, so the restarted broker starts empty and topics are
created again; the guarantee under test is that what was buffered (within the bound) is
delivered once a broker is back, and that over the bound the oldest audio is dropped with a
gap record while lifecycle records are kept.

tansu acknowledges a write to a topic that does not exist and drops it; the sink therefore
waits, after a failure, until every topic is back before writing again. A batch already
handed to the Kafka client when the empty broker appears is beyond that check, so the tests
let in-flight batches fail first (with Apache Kafka the topics survive a restart).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect

from agentstream.stack.broker import EmbeddedBroker, free_port
from agentstream.stack.topics import create_topics
from tests.helpers import async_wait_until
from tests.integration.ingest.ingest_support import (
    dtmf,
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

FRAME = 1600  # 100 ms at 8 kHz


@pytest.fixture
def own_port() -> Iterator[int]:
    yield free_port()


async def _start_broker(port: int, prefix: str) -> EmbeddedBroker:
    broker = await asyncio.to_thread(EmbeddedBroker(port=port).start)
    await asyncio.to_thread(create_topics, broker.bootstrap, prefix)
    return broker


async def test_broker_down_then_back_nothing_lost_within_bound(
    own_port: int, topic_prefix: str
) -> None:
    broker = await _start_broker(own_port, topic_prefix)
    brokers = [broker]
    try:
        async with running_server(
            broker.bootstrap,
            topic_prefix,
            create=False,
            request_timeout_ms=1500,
            retry_backoff_ms=100,
            buffer_max_bytes=40 * 2048,  # room for ~40 frames with their headers
        ) as server:
            async with connect(ws_url(server)) as ws:
                await ws.send(start("CA-R", "ST-R"))
                for seq in range(2, 7):
                    await ws.send(media("ST-R", seq, seq - 1, (seq - 2) * 100, pcm(FRAME, seq)))
                await async_wait_until(lambda: server.stats.frames_acked == 5)

                await asyncio.to_thread(broker.stop)
                for seq in range(7, 27):  # 20 frames while Kafka is down
                    await ws.send(media("ST-R", seq, seq - 1, (seq - 2) * 100, pcm(FRAME, seq)))
                await ws.send(dtmf("ST-R", 27, "3"))
                await async_wait_until(lambda: server.stats.frames_in == 25)
                # let the batch that was in flight fail: tansu would ack it into the void if
                # it reached the new broker before the topics are re-created (see module doc)
                await async_wait_until(lambda: server.sink.in_flight == 0, timeout=15)
                assert server.stats.produce_retries >= 1
                assert server.stats.frames_acked == 5
                assert server.sink.buffered_bytes > 20 * FRAME

                broker = await _start_broker(own_port, topic_prefix)
                brokers.append(broker)
                await async_wait_until(lambda: server.stats.frames_acked == 25, timeout=30)
                await ws.send(stop("CA-R", "ST-R", 28))
                await ws.wait_closed()
            assert server.stats.frames_dropped == 0

        audio = await read_audio(broker.bootstrap, topic_prefix, 20)
        assert [value for _, value, _ in audio] == [pcm(FRAME, seq) for seq in range(7, 27)]
        assert [meta.sequence_number for _, _, meta in audio] == list(range(7, 27))
        calls = await read_calls(broker.bootstrap, topic_prefix, 2)
        assert [(c.kind, c.dtmf_digit, c.stop_reason) for c in calls] == [
            ("dtmf", "3", None),
            ("stop", None, "callended"),
        ]
    finally:
        for each in brokers:
            await asyncio.to_thread(each.stop)


async def test_over_the_bound_oldest_audio_dropped_lifecycle_kept(
    own_port: int, topic_prefix: str
) -> None:
    broker = await _start_broker(own_port, topic_prefix)
    brokers = [broker]
    try:
        async with running_server(
            broker.bootstrap,
            topic_prefix,
            create=False,
            request_timeout_ms=1500,
            retry_backoff_ms=100,
            buffer_max_bytes=10 * 2048,
        ) as server:
            async with connect(ws_url(server)) as ws:
                await ws.send(start("CA-B", "ST-B"))
                await async_wait_until(lambda: server.stats.records_acked == 1)
                await asyncio.to_thread(broker.stop)
                for seq in range(2, 32):  # 30 frames, room for about 10
                    await ws.send(media("ST-B", seq, seq - 1, (seq - 2) * 100, pcm(FRAME, seq)))
                await ws.send(dtmf("ST-B", 32, "7"))
                await async_wait_until(lambda: server.stats.frames_in == 30)
                await async_wait_until(lambda: server.sink.in_flight == 0, timeout=15)
                dropped = server.stats.frames_dropped
                assert dropped >= 15

                broker = await _start_broker(own_port, topic_prefix)
                brokers.append(broker)
                kept = 30 - dropped
                await async_wait_until(lambda: server.stats.frames_acked == kept, timeout=30)
                await ws.send(stop("CA-B", "ST-B", 33))
                await ws.wait_closed()

        audio = await read_audio(broker.bootstrap, topic_prefix, kept)
        seqs = [meta.sequence_number for _, _, meta in audio]
        # oldest first: whatever survived is the newest frames, still in order; the first frame
        # may have been in flight (not droppable) when the broker went away
        assert seqs[-(kept - 1) :] == list(range(32 - (kept - 1), 32))
        calls = await read_calls(broker.bootstrap, topic_prefix, 3)
        assert [c.kind for c in calls] == ["dtmf", "gap", "stop"]
        gap = calls[1]
        assert gap.dropped_frames == dropped
        assert gap.params["cause"] == "ingest_buffer_full"
    finally:
        for each in brokers:
            await asyncio.to_thread(each.stop)
