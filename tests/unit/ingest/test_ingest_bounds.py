"""Ingest bounds and the dynamic stream URL without sockets (issue 18's ingest part, 17 item 7),
plus the worker filter that keeps outbound (bot) audio out of the caller's transcript."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, cast

import orjson
import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request

from analytics.asr.service import TranscriptionService
from ingest.http import Gate
from ingest.http_post import _merge_body
from ingest.live import LiveCalls, LiveConnection
from ingest.metrics import IngestStats
from ingest.outgoing import AUDIO, CALLS, CallTag, Outgoing
from ingest.session import StreamSession
from ingest.settings import IngestSettings
from ingest.sink import RecordSink
from ingest.voicebot import MAX_HELD_MESSAGES, VoicebotRelay
from schemas.records import AudioFrameMeta
from tests.unit.asr.asr_fakes import FakeRecognizer
from tests.unit.asr.test_asr_service import FakeClock, FakeSink, make_service

pytestmark = pytest.mark.unit

# Exotel's own fetch of a dynamic URL, as logged in public code (see docs/ingest.md)
PASSTHRU = (
    '"https:\\/\\/example.com\\/exotel\\/dtmf-input?CallSid=9953099079d70b89bbc1aa43ae6d1893'
    "&CallFrom=09901320691&CallTo=08069891522&Direction=incoming&Created=Tue%2C+03+Sep+2024"
    '+11%3A44%3A54&DialCallDuration=0&StartTime=2024-09-03+11%3A44%3A54"'
) * 3
EXOTEL_FETCH = {
    "CallSid": "9953099079d70b89bbc1aa43ae6d1893",
    "CallFrom": "09901320691",
    "CallTo": "08069891522",
    "Direction": "incoming",
    "Created": "Tue, 03 Sep 2024 11:44:54",
    "DialWhomNumber": "",
    "HangupLatencyStartTimeExocc": "",
    "HangupLatencyStartTime": "",
    "passthru": PASSTHRU,
    "From": "09901320691",
    "To": "08069891522",
    "CurrentTime": "2024-09-03 11:44:54",
    "AccountSid": "exotel-account",
}


def _basic(key: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{token}".encode()).decode()


def _request() -> Request:
    return Request("/exotel/stream-url", Headers([("Host", "ingest.example:8080")]))


def _url(gate: Gate, query: dict[str, str], auth: str | None = None) -> str:
    answer = gate.stream_url(_request(), query, auth)
    assert answer.status_code == 200, answer.body
    return str(orjson.loads(answer.body)["url"])


def test_stream_url_ignores_exotels_fetch_parameters() -> None:
    assert len(PASSTHRU) > 600
    gate = Gate(IngestSettings(stream_url_params="lang"))
    query = {**EXOTEL_FETCH, "tenant": "acme", "campaign": "q4", "lang": "hi", "x": "y"}
    assert _url(gate, query) == "wss://ingest.example:8080/stream?tenant=acme&campaign=q4&lang=hi"
    assert _url(gate, EXOTEL_FETCH) == "wss://ingest.example:8080/stream"


def test_stream_url_is_wss_unless_ws_is_configured() -> None:
    assert _url(Gate(IngestSettings()), {}).startswith("wss://")
    assert _url(Gate(IngestSettings(stream_url_scheme="ws")), {}).startswith("ws://")
    assert _url(Gate(IngestSettings(public_url="https://in.example")), {}) == (
        "wss://in.example/stream"
    )


def test_stream_url_answers_with_the_callers_own_credential() -> None:
    gate = Gate(IngestSettings(basic_auth="alpha:ta,beta:tb"))
    assert _url(gate, {}, _basic("beta", "tb")) == "wss://beta:tb@ingest.example:8080/stream"
    assert _url(gate, {}, _basic("alpha", "ta")) == "wss://alpha:ta@ingest.example:8080/stream"
    assert "alpha" not in _url(gate, {}, _basic("beta", "tb"))
    assert gate.identify(_basic("beta", "ta")) is None  # another key's token
    assert _url(Gate(IngestSettings()), {}, _basic("beta", "tb")) == (
        "wss://ingest.example:8080/stream"
    )


@pytest.mark.parametrize(
    ("body", "content_type", "path"),
    [
        (b"CallSid=CA1&tenant=a", "application/x-www-form-urlencoded", "/u?CallSid=CA1&tenant=a"),
        (b'{"CallSid": "CA1", "n": 5}', "application/json", "/u?CallSid=CA1&n=5"),
        (b"[1]", "application/json", "/u"),
        (b"", "", "/u"),
    ],
)  # fmt: skip
def test_post_bodies_merge_into_the_query(body: bytes, content_type: str, path: str) -> None:
    assert _merge_body("/u", body, content_type) == path


async def test_a_record_over_the_limit_is_dead_lettered_not_retried() -> None:
    settings = IngestSettings(max_record_bytes=16 * 1024, topic_prefix="u.")
    sink = RecordSink(settings, IngestStats(), wall_ms=lambda: 1)
    sink._partitions = {sink.audio_topic: 2, sink.calls_topic: 2, sink.deadletter_topic: 1}
    try:
        tag = CallTag("CA1", "ST1", "t", "c")
        sink.write([Outgoing(AUDIO, b"CA1", bytes(20_000), 0.0, tag, 1)])
        sink.write([Outgoing(CALLS, b"CA1", b"x" * 20_000, 0.0)])
        sink.write([Outgoing(AUDIO, b"CA1", bytes(1600), 0.0, tag, 2)])
        assert sink.stats.records_too_large == 2
        letters = sink.queue_for(sink.deadletter_topic, b"CA1").pending
        errors = [orjson.loads(e.value)["error"] for e in letters]
        assert len(errors) == 2 and all("16384-byte record limit" in e for e in errors)
        assert [e.seq for e in sink.queue_for(sink.audio_topic, b"CA1").pending] == [2]
    finally:
        for queue in sink._queues.values():
            assert queue.task is not None
            queue.task.cancel()
        await asyncio.gather(
            *(q.task for q in sink._queues.values() if q.task), return_exceptions=True
        )


async def test_voicebot_messages_before_start_are_capped() -> None:
    stats = IngestStats()
    relay = VoicebotRelay(IngestSettings(), LiveCalls(), stats)
    session = StreamSession(stats, "voicebot", {})
    call = LiveConnection(cast(Any, None), session)
    for _ in range(1000):
        await relay.on_message(call, '{"event":"media","media":{"payload":"AAAA"}}', None)
    assert len(call.held) == MAX_HELD_MESSAGES
    assert stats.prestart_dropped == 1000 - MAX_HELD_MESSAGES
    await relay.on_message(call, "x" * 70_000, None)  # over the byte cap on its own
    assert len(call.held) == MAX_HELD_MESSAGES


async def test_worker_skips_outbound_frames_and_acks_them() -> None:
    clock = FakeClock()
    sink = FakeSink()
    service: TranscriptionService = make_service(FakeRecognizer(), sink, clock)
    acked: list[int] = []
    for seq in range(1, 30):
        meta = AudioFrameMeta(
            call_sid="CA1",
            stream_sid="S1",
            track="outbound",
            sequence_number=seq,
            sample_rate_hz=8000,
            received_at_ms=1,
            offset_ms=seq * 100,
        )
        service.on_frame(meta, bytes(1600), lambda seq=seq: acked.append(seq))
    assert acked == list(range(1, 30))  # acknowledged at once, so offsets move on
    assert service.sessions == {} and service.calls_started == 0  # never transcribed
