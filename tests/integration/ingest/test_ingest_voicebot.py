"""/voicebot: relay both ways to an upstream bot, tee audio to Kafka, hand off on escalation."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from schemas.exotel import mark_message, media_message
from schemas.records import Decision
from schemas.topics import DECISIONS, prefixed
from tests.helpers import async_wait_until
from tests.integration.ingest.ingest_support import (
    connected,
    dtmf,
    mark,
    media,
    msg,
    pcm,
    read_audio,
    read_calls,
    running_server,
    start,
    ws_url,
)

pytestmark = pytest.mark.integration


class UpstreamTestBot:
    """A tiny bot: records what it gets, answers start with audio and a mark."""

    def __init__(self) -> None:
        self.received: list[str | bytes] = []
        self.close_codes: list[int | None] = []
        self.reply = media_message("ST-V", pcm(3200, 5)).decode()

    async def handler(self, ws: ServerConnection) -> None:
        async for message in ws:
            self.received.append(message)
            if isinstance(message, str) and '"start"' in message:
                await ws.send(self.reply)
                await ws.send(mark_message("ST-V", "bot-said-hello").decode())
        self.close_codes.append(ws.close_code)


async def _escalate(bootstrap: str, prefix: str, call_sid: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        decision = Decision(
            call_sid=call_sid,
            decision="escalate",
            rule_id="angry-caller",
            reason="sentiment below -0.6",
            target_group="retention",
            decided_at_ms=int(time.time() * 1000),
            latency_ms=1.0,
        )
        await producer.send_and_wait(
            prefixed(DECISIONS, prefix), decision.to_bytes(), key=call_sid.encode()
        )
    finally:
        await producer.stop()


async def test_proxy_relays_both_ways_and_hands_off(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    bot = UpstreamTestBot()
    async with serve(bot.handler, "127.0.0.1", 0) as upstream:
        bot_port = upstream.sockets[0].getsockname()[1]
        upstreams = {"botco": f"ws://127.0.0.1:{bot_port}/bot"}
        async with running_server(
            kafka_bootstrap, topic_prefix, voicebot_upstreams=upstreams
        ) as server:
            await async_wait_until(lambda: server.decisions.ready, timeout=15)
            sent = [
                connected(),
                start("CA-V", "ST-V", custom={"tenant": "botco"}),
                media("ST-V", 2, 1, 0, pcm(1600, 1)),
                dtmf("ST-V", 3, "9"),
                mark("ST-V", 4, "bot-said-hello"),
                msg({"event": "clear", "stream_sid": "ST-V"}),  # from Exotel: relayed, known
                media("ST-V", 5, 2, 100, pcm(1600, 2)),
            ]
            async with connect(ws_url(server, "/voicebot")) as ws:
                for message in sent:
                    await ws.send(message)
                assert await ws.recv() == bot.reply  # bot -> Exotel unchanged
                assert orjson.loads(await ws.recv())["mark"]["name"] == "bot-said-hello"
                await async_wait_until(lambda: len(bot.received) == len(sent))
                assert bot.received == sent  # Exotel -> bot unchanged, connected held until start
                assert not server.stats.unknown_events

                await _escalate(kafka_bootstrap, topic_prefix, "CA-V")
                cleared = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                assert cleared == {"event": "clear", "stream_sid": "ST-V"}
                await ws.wait_closed()
                assert ws.close_code == 1000
            await async_wait_until(lambda: bot.close_codes == [1000])

    audio = await read_audio(kafka_bootstrap, topic_prefix, 2)
    assert [value for _, value, _ in audio] == [pcm(1600, 1), pcm(1600, 2)]
    calls = await read_calls(kafka_bootstrap, topic_prefix, 5)
    assert [c.kind for c in calls] == ["start", "dtmf", "mark", "handoff", "stop"]
    assert calls[3].params == {
        "reason": "sentiment below -0.6",
        "rule_id": "angry-caller",
        "target_group": "retention",
    }
    assert calls[4].stop_reason == "handoff"


async def test_without_upstream_behaves_like_stream_and_hands_off(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with running_server(kafka_bootstrap, topic_prefix) as server:
        await async_wait_until(lambda: server.decisions.ready, timeout=15)
        async with connect(ws_url(server, "/voicebot")) as ws:
            await ws.send(start("CA-N", "ST-N"))
            await ws.send(media("ST-N", 2, 1, 0, pcm(1600, 3)))
            await async_wait_until(lambda: server.stats.frames_acked == 1)
            await _escalate(kafka_bootstrap, topic_prefix, "CA-OTHER")  # not ours: ignored
            await _escalate(kafka_bootstrap, topic_prefix, "CA-N")
            cleared = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert cleared == {"event": "clear", "stream_sid": "ST-N"}
            await ws.wait_closed()
            assert ws.close_code == 1000
    calls = await read_calls(kafka_bootstrap, topic_prefix, 3)
    assert [(c.kind, c.stop_reason) for c in calls] == [
        ("start", None),
        ("handoff", None),
        ("stop", "handoff"),
    ]


async def test_a_reconnect_is_still_handed_off_after_the_old_socket_closes(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Exotel reconnects a call's Voicebot stream while the old socket is still open; the old
    one then closes. The escalation must still reach the new socket."""
    async with running_server(kafka_bootstrap, topic_prefix) as server:
        await async_wait_until(lambda: server.decisions.ready, timeout=15)
        async with connect(ws_url(server, "/voicebot")) as new:
            async with connect(ws_url(server, "/voicebot")) as old:
                await old.send(start("CA-R", "ST-R1"))
                await async_wait_until(lambda: "CA-R" in server.live.by_sid)
                await new.send(start("CA-R", "ST-R2"))  # the reconnect takes the call over
                await new.send(media("ST-R2", 2, 1, 0, pcm(1600, 3)))
                await async_wait_until(lambda: server.stats.frames_acked == 1)
                assert server.live.by_sid["CA-R"].session.stream_sid == "ST-R2"
            # the old socket closed: the call is still the new one's
            await async_wait_until(lambda: server.stats.active_calls == 1)
            await _escalate(kafka_bootstrap, topic_prefix, "CA-R")
            cleared = orjson.loads(await asyncio.wait_for(new.recv(), 10))
            assert cleared == {"event": "clear", "stream_sid": "ST-R2"}
            await new.wait_closed()
            assert new.close_code == 1000
