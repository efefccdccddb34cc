"""The /stream endpoint against the real broker and real sockets."""

from __future__ import annotations

import asyncio
import base64

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

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
    read_deadletters,
    running_server,
    start,
    stop,
    ws_url,
)

pytestmark = pytest.mark.integration


async def test_every_event_variant_end_to_end(kafka_bootstrap: str, topic_prefix: str) -> None:
    frames = [pcm(3200, 1), pcm(1600, 7), pcm(640, 9), pcm(3200, 11)]  # sizes vary: never assumed
    async with running_server(kafka_bootstrap, topic_prefix) as server:
        async with connect(ws_url(server) + "?tenant=ignored") as ws:
            await ws.send(connected())
            # numbers as strings, streamSid spelling, 16 kHz from media_format
            await ws.send(
                start(
                    "CA1",
                    "ST1",
                    seq="1",
                    custom={"tenant": "acme", "campaign": "renewals", "lang": "en"},
                    rate="16000",
                    stream_key="streamSid",
                )
            )
            await ws.send(media("ST1", "2", "1", "0", frames[0]))
            await ws.send(media("ST1", 3, 2, 100, frames[1]))
            await ws.send(dtmf("ST1", 4, "5", "300"))
            await ws.send(msg({"event": "transcript-hint", "sequence_number": 5}))  # unknown
            await ws.send(mark("ST1", 5, "greeting-done"))
            await ws.send(media("ST1", 6, 3, 150, frames[2]))
            await ws.send(media("ST1", 6, 3, 150, frames[2]))  # duplicate
            await ws.send(media("ST1", 9, 6, 300, frames[3]))  # gap: 7 and 8 missing
            await ws.send(stop("CA1", "ST1", 10, "callended"))
            await ws.wait_closed()
            assert ws.close_code == 1000
        assert server.stats.unknown_events["other"] == 1  # labels from a closed set

    audio = await read_audio(kafka_bootstrap, topic_prefix, 4)
    assert [value for _, value, _ in audio] == frames  # byte-exact and in order
    assert {key for key, _, _ in audio} == {b"CA1"}
    metas = [meta for _, _, meta in audio]
    assert [m.sequence_number for m in metas] == [2, 3, 6, 9]
    assert [m.chunk for m in metas] == [1, 2, 3, 6]
    assert [m.timestamp_ms for m in metas] == [0, 100, 150, 300]
    # offsets from bytes and rate: 3200 B at 16 kHz = 100 ms, +1600 B = 50 ms, +640 B = 20 ms
    assert [m.offset_ms for m in metas] == [0, 100, 150, 170]
    assert {(m.sample_rate_hz, m.tenant, m.campaign, m.stream_sid, m.call_sid) for m in metas} == {
        (16000, "acme", "renewals", "ST1", "CA1")
    }
    assert all(m.received_at_ms > 1_600_000_000_000 for m in metas)

    calls = await read_calls(kafka_bootstrap, topic_prefix, 6)
    kinds = [c.kind for c in calls]
    assert kinds == ["start", "dtmf", "mark", "duplicate", "gap", "stop"]
    first = calls[0]
    assert (first.sample_rate_hz, first.from_number, first.account_sid) == (
        16000,
        "+919800000001",
        "AC1",
    )
    assert first.custom_parameters == {"tenant": "acme", "campaign": "renewals", "lang": "en"}
    assert all(c.tenant == "acme" and c.campaign == "renewals" for c in calls)
    assert (calls[1].dtmf_digit, calls[1].dtmf_duration_ms) == ("5", 300)
    assert calls[2].mark_name == "greeting-done"
    assert (calls[3].expected_sequence, calls[3].received_sequence) == (7, 6)
    assert (calls[4].expected_sequence, calls[4].received_sequence) == (7, 9)
    assert calls[4].dropped_frames == 2
    assert calls[5].stop_reason == "callended"


async def test_sample_rate_from_query_and_synthetic_stop(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with running_server(kafka_bootstrap, topic_prefix) as server:
        url = ws_url(server) + "?sample-rate=24000&campaign=winback"
        async with connect(url) as ws:
            await ws.send(start("CA2", "ST2", rate=None))
            await ws.send(media("ST2", 2, 1, 0, pcm(4800, 3)))
            await ws.send(media("ST2", 3, 2, 100, pcm(4800, 4)))
        # socket dropped without stop
        await async_wait_until(lambda: server.stats.active_calls == 0)

    audio = await read_audio(kafka_bootstrap, topic_prefix, 2)
    assert [m.sample_rate_hz for _, _, m in audio] == [24000, 24000]
    assert [m.offset_ms for _, _, m in audio] == [0, 100]
    assert {m.campaign for _, _, m in audio} == {"winback"}
    calls = await read_calls(kafka_bootstrap, topic_prefix, 2)
    assert [c.kind for c in calls] == ["start", "stop"]
    assert calls[1].stop_reason == "disconnected"


# Inputs that end their own call, with the close code (every one dead-lettered)
BAD_INPUTS: list[tuple[str, str | bytes, int]] = [
    ("binary frame", b"\x00\x01binary", 1003),
    ("unusable start", msg({"event": "start", "start": {"from": "0999"}}), 1007),
    ("second start", "SECOND_START", 1008),
    ("integer past 64 bits", "HUGE_INT", 1007),
    ("overlong call sid", msg({"event": "start", "start": {"call_sid": "C" * 500}}), 1007),
    ("oversized frame", "x" * 5000, 1009),
    ("absurd nesting", '{"event":"media","a":' + "[" * 50 + "]" * 50 + "}", 1008),
]
# Undecodable frames: dead-lettered one by one while the call goes on
TOLERATED: list[str] = [
    "{not json",
    msg({"event": "media", "sequence_number": "x", "media": {"payload": ""}}),
    msg({"event": "media", "media": {"payload": "%%%not-b64"}}),
    media("S", 2, 1, 0, pcm(321, 1)),  # odd-length PCM16
    msg({"event": "media"}),
]


async def _bad_call(server_url: str, index: int, name: str, bad: str | bytes) -> ClientConnection:
    sid = f"BAD{index}"
    ws = await connect(server_url)
    if isinstance(bad, str) and bad.startswith('{"event":"start"'):
        await ws.send(bad)
    else:
        await ws.send(start(f"CA-{sid}", sid))
        if bad == "SECOND_START":
            bad = start(f"CA-{sid}", sid, seq=2)
        elif bad == "HUGE_INT":
            bad = media(sid, 2**63, 1, 0, pcm(320, 1))
        await ws.send(bad)
    await ws.wait_closed()
    return ws


async def test_bad_inputs_close_with_codes_and_spare_other_calls(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    frames = [pcm(1600, i) for i in range(20)]
    async with running_server(kafka_bootstrap, topic_prefix, max_message_bytes=4096) as server:
        async with connect(ws_url(server)) as healthy:
            await healthy.send(media("ST-OK", 1, 1, 0, frames[0]))  # before start: ignored
            await healthy.send(stop("CA-OK", "ST-OK", 1))  # before start: ignored too
            await healthy.send(start("CA-OK", "ST-OK"))
            results = []
            for index, (name, bad, _code) in enumerate(BAD_INPUTS):
                await healthy.send(media("ST-OK", index + 2, index + 1, index * 100, frames[index]))
                await healthy.send(TOLERATED[index % len(TOLERATED)])
                results.append(await _bad_call(ws_url(server), index, name, bad))
            for index in range(len(BAD_INPUTS), len(frames)):
                await healthy.send(media("ST-OK", index + 2, index + 1, index * 100, frames[index]))
            await healthy.send(stop("CA-OK", "ST-OK", len(frames) + 2))
            await healthy.wait_closed()
            assert healthy.close_code == 1000
        for (name, _bad, code), ws in zip(BAD_INPUTS, results, strict=True):
            assert ws.close_code == code, name
            assert ws.close_reason, name
        for _name, _bad, code in BAD_INPUTS:
            assert server.stats.protocol_errors[code] >= 1
        assert server.stats.bad_frames == len(BAD_INPUTS)
        assert server.stats.events_before_start == 1
        await async_wait_until(lambda: server.stats.active_calls == 0)  # no zombie socket

    audio = await read_audio(kafka_bootstrap, topic_prefix, len(frames))
    healthy_frames = [value for key, value, _ in audio if key == b"CA-OK"]
    assert healthy_frames == frames
    expected = 2 * len(BAD_INPUTS)  # one per closing input, one per tolerated frame
    letters = await read_deadletters(kafka_bootstrap, topic_prefix, expected)
    assert len(letters) == expected
    by_error = {letter.error: letter for letter in letters}
    assert all(letter.stage == "ingest" for letter in letters)
    raws = {base64.b64decode(letter.raw_base64) for letter in letters}
    assert b"{not json" in raws and b"\x00\x01binary" in raws
    assert any("base64" in error for error in by_error)
    assert any("odd length" in error for error in by_error)
    assert any("64-bit" in error for error in by_error)
    assert any("unusable 'start'" in error for error in by_error)
    assert any("second 'start'" in error for error in by_error)
    tolerated = [letter for letter in letters if letter.call_sid == "CA-OK"]
    assert len(tolerated) == len(BAD_INPUTS)


async def test_timeouts_and_session_cap(kafka_bootstrap: str, topic_prefix: str) -> None:
    async with running_server(
        kafka_bootstrap,
        topic_prefix,
        first_message_timeout_s=0.3,
        idle_timeout_s=0.4,
        session_cap_s=1.0,
        sweep_interval_s=0.05,
    ) as server:
        async with connect(ws_url(server)) as silent:
            await silent.wait_closed()
            assert silent.close_code == 1008
        async with connect(ws_url(server)) as idle:
            await idle.send(start("CA-IDLE", "ST-IDLE"))
            await idle.wait_closed()
            assert idle.close_code == 1000
        async with connect(ws_url(server)) as long:
            await long.send(start("CA-LONG", "ST-LONG"))
            seq = 2
            try:
                while True:
                    await long.send(media("ST-LONG", seq, seq - 1, (seq - 2) * 100, pcm(320, 0)))
                    seq += 1
                    await asyncio.sleep(0.05)
            except ConnectionClosed:
                pass
            assert long.close_code == 1000
    calls = await read_calls(kafka_bootstrap, topic_prefix, 4)
    stops = {c.call_sid: c.stop_reason for c in calls if c.kind == "stop"}
    assert stops == {"CA-IDLE": "timeout", "CA-LONG": "session_cap"}


async def test_http_endpoints_and_dynamic_url(kafka_bootstrap: str, topic_prefix: str) -> None:
    async with running_server(
        kafka_bootstrap, topic_prefix, stream_url_scheme="ws", stream_url_params="agent_tier"
    ) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/health") as resp:
                assert resp.status == 200
                assert (await resp.json())["status"] == "ok"
            query = "tenant=acme&campaign=q4&agent_tier=gold&CallSid=CA9&From=%2B91"
            async with http.get(f"{base}/exotel/stream-url?{query}") as resp:
                assert resp.status == 200
                url = (await resp.json())["url"]
            assert (
                url
                == f"ws://127.0.0.1:{server.port}/stream?tenant=acme&campaign=q4&agent_tier=gold"
            )
            async with http.get(f"{base}/exotel/stream-url?a=1&b=2&c=3&d=4") as resp:
                assert resp.status == 200  # parameters nobody allow-listed are dropped
            async with http.post(f"{base}/exotel/stream-url", data={"tenant": "acme"}) as resp:
                assert (await resp.json())["url"].endswith("/stream?tenant=acme")
            async with http.post(f"{base}/stream", data={"tenant": "acme"}) as resp:
                assert resp.status == 405
            async with http.get(f"{base}/nope") as resp:
                assert resp.status == 404

            async with connect(url) as ws:
                # Exotel copies the URL's query parameters into custom_parameters
                await ws.send(
                    start(
                        "CA-D",
                        "ST-D",
                        custom={"tenant": "acme", "campaign": "q4", "agent_tier": "gold"},
                    )
                )
                await ws.send(media("ST-D", 2, 1, 0, pcm(1600, 2)))
                await ws.send(stop("CA-D", "ST-D", 3))
                await ws.wait_closed()
            await async_wait_until(lambda: server.stats.frames_acked >= 1)
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            assert "ingest_frames_total 1.0" in text
            assert 'ingest_closes_total{code="1000"}' in text
            assert "ingest_produce_latency_seconds_bucket" in text
    audio = await read_audio(kafka_bootstrap, topic_prefix, 1)
    assert (audio[0][2].tenant, audio[0][2].campaign) == ("acme", "q4")
