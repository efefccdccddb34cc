"""Replay the conformance corpus through the real ingest server and the real broker.

Every shape is accepted and its frames land byte-exact (μ-law frames as PCM16 equal to the
independent reference decode), outbound frames carry their track header, and the dynamic
stream URL answers Exotel's real fetch (GET and POST) with a URL that works.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from urllib.parse import urlencode

import aiohttp
import pytest
from websockets.asyncio.client import connect

from ingest.server import IngestServer
from schemas.records import AudioFrameMeta, CallEvent
from tests.integration.ingest.conformance.corpus import CASES, Case
from tests.integration.ingest.ingest_support import (
    msg,
    read_audio,
    read_calls,
    running_server,
    ws_url,
)
from tests.unit.ingest.test_ingest_bounds import EXOTEL_FETCH

pytestmark = pytest.mark.integration


async def _play(server: IngestServer, case: Case) -> int | None:
    url = ws_url(server) + ("?" + urlencode(case.query) if case.query else "")
    async with connect(url) as ws:
        for message in case.messages:
            await ws.send(message)
        await ws.wait_closed()
        return ws.close_code


def _check(
    case: Case, audio: list[tuple[bytes, AudioFrameMeta]], starts: dict[str, CallEvent]
) -> list[str]:
    problems: list[str] = []
    values = [value for value, _ in audio]
    metas = [meta for _, meta in audio]
    if values != case.frames:
        problems.append(f"frames differ: {len(values)} landed, {len(case.frames)} expected")
    if {m.sample_rate_hz for m in metas} != {case.rate}:
        problems.append(f"rates {sorted({m.sample_rate_hz for m in metas})} != {case.rate}")
    tracks = case.tracks or ["inbound"] * len(case.frames)
    if [m.track for m in metas] != tracks:
        problems.append(f"tracks {[m.track for m in metas]} != {tracks}")
    if {m.tenant for m in metas} != {case.tenant}:
        problems.append(f"tenant {[m.tenant for m in metas][:1]} != {case.tenant}")
    if {m.encoding for m in metas} != {case.encoding}:
        problems.append(f"encoding header {[m.encoding for m in metas][:1]} != {case.encoding}")
    start = starts.get(case.call_sid)
    if start is None:
        problems.append("no start record")
    elif (start.call_sid_source, start.sample_rate_hz) != (case.call_sid_source, case.rate):
        problems.append(f"start says {start.call_sid_source} at {start.sample_rate_hz} Hz")
    return problems


async def test_every_corpus_shape_is_accepted_and_its_frames_land(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    assert len({case.call_sid for case in CASES}) == len(CASES)
    async with running_server(kafka_bootstrap, topic_prefix) as server:
        codes = await asyncio.gather(*(_play(server, case) for case in CASES))
        stats = server.stats
        assert stats.bad_frames == 0 and stats.deadletters == 0
        assert not stats.protocol_errors and not stats.unknown_events
    closed = {case.name: code for case, code in zip(CASES, codes, strict=True) if code != 1000}
    assert closed == {}, f"closed instead of ending normally: {closed}"

    total = sum(len(case.frames) for case in CASES)
    audio = await read_audio(kafka_bootstrap, topic_prefix, total)
    by_call: dict[str, list[tuple[bytes, AudioFrameMeta]]] = defaultdict(list)
    for key, value, meta in audio:
        by_call[key.decode()].append((value, meta))
    calls = await read_calls(kafka_bootstrap, topic_prefix, 2 * len(CASES))
    starts = {c.call_sid: c for c in calls if c.kind == "start"}
    failures = {
        f"{case.name} [{case.source}]": problems
        for case in CASES
        if (problems := _check(case, by_call[case.call_sid], starts))
    }
    assert failures == {}


async def test_stream_url_answers_exotels_real_fetch(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    async with running_server(
        kafka_bootstrap, topic_prefix, stream_url_scheme="ws", stream_url_params="CallSid"
    ) as server:
        base = f"http://127.0.0.1:{server.port}/exotel/stream-url"
        fetch = {**EXOTEL_FETCH, "tenant": "acme", "campaign": "q4"}
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "?" + urlencode(fetch)) as resp:
                assert resp.status == 200
                got = (await resp.json())["url"]
            async with http.post(base, data=fetch) as resp:  # form body
                assert resp.status == 200
                assert (await resp.json())["url"] == got
            async with http.post(base, json=fetch) as resp:  # JSON body
                assert (await resp.json())["url"] == got
        call_sid = EXOTEL_FETCH["CallSid"]
        assert got == (
            f"ws://127.0.0.1:{server.port}/stream?tenant=acme&campaign=q4&CallSid={call_sid}"
        )
        async with connect(got) as ws:  # a start without call_sid: the URL's CallSid names it
            await ws.send(msg({"event": "start", "start": {"stream_sid": "MZ-URL"}}))
            await ws.send(msg({"event": "media", "media": {"payload": "AAAAAA=="}}))
            await ws.send(msg({"event": "stop", "stop": {"reason": "callended"}}))
            await ws.wait_closed()
            assert ws.close_code == 1000
    audio = await read_audio(kafka_bootstrap, topic_prefix, 1)
    assert audio[0][0].decode() == call_sid
    assert (audio[0][2].tenant, audio[0][2].campaign) == ("acme", "q4")
