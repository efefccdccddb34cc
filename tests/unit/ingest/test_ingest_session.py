"""StreamSession, Gate, settings and the sink's shedding, without a broker or sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest
from pydantic import ValidationError
from websockets.datastructures import Headers
from websockets.http11 import Request

from ingest.http import Gate
from ingest.metrics import IngestStats, make_registry, render
from ingest.outgoing import AUDIO, CallTag, Outgoing
from ingest.session import StreamSession
from ingest.settings import IngestSettings
from ingest.sink import RecordSink
from schemas.errors import ProtocolError
from schemas.records import AudioFrameMeta, CallEvent, audio_headers, static_audio_headers

pytestmark = pytest.mark.unit


class FakeSink:
    """What a session returned, as the sink would write it (headers encoded by the sink)."""

    _TOPICS = {"audio": "a", "calls": "c", "deadletter": "d"}

    def __init__(self, outbox: list[Outgoing]) -> None:
        self._outbox = outbox

    @property
    def audio(self) -> list[Outgoing]:
        frames = [o for o in self._outbox if o.topic_kind == AUDIO]
        for f in frames:  # the sink's encoding (schemas.records), without its queues
            assert f.call is not None
            c = f.call
            rate = ("as-sample_rate_hz", str(c.sample_rate_hz).encode())
            static = static_audio_headers(c.call_sid, c.stream_sid, c.tenant, c.campaign)
            f.headers = audio_headers(
                static, f.seq, f.chunk, f.media_timestamp_ms, rate, f.received_at_ms, f.offset_ms
            )
        return frames

    @property
    def records(self) -> list[tuple[str, bytes]]:
        return [
            (self._TOPICS[o.topic_kind], o.value) for o in self._outbox if o.topic_kind != AUDIO
        ]

    @property
    def gap_flushes(self) -> list[str]:
        return [o.call.call_sid for o in self._outbox if o.ends_call and o.call is not None]

    def calls(self) -> list[CallEvent]:
        return [CallEvent.model_validate(orjson.loads(v)) for t, v in self.records if t == "c"]


def _start(
    media_format: dict[str, object] | None = None, custom: dict[str, str] | None = None
) -> str:
    start: dict[str, object] = {"call_sid": "CA1", "stream_sid": "ST1"}
    if media_format is not None:
        start["media_format"] = media_format
    if custom is not None:
        start["custom_parameters"] = custom
    return orjson.dumps({"event": "start", "sequence_number": 1, "start": start}).decode()


def _media(seq: int | None, pcm: bytes, chunk: int | None = 1, ts: int | None = 0) -> str:
    media: dict[str, object] = {"payload": base64.b64encode(pcm).decode()}
    if chunk is not None:
        media["chunk"] = chunk
    if ts is not None:
        media["timestamp"] = ts
    event: dict[str, object] = {"event": "media", "stream_sid": "ST1", "media": media}
    if seq is not None:
        event["sequence_number"] = seq
    return orjson.dumps(event).decode()


def _session(query: dict[str, str] | None = None) -> tuple[StreamSession, FakeSink, IngestStats]:
    stats = IngestStats()
    session = StreamSession(stats, "stream", query or {}, wall_ms=lambda: 1_700_000_000_000)
    return session, FakeSink(session.outbox), stats


def test_headers_equal_the_model() -> None:
    static = static_audio_headers("CA1", "ST1", "acme", "q4")
    for chunk, ts in ((3, 200), (None, None), (7, None)):
        fast = audio_headers(static, 5, chunk, ts, ("as-sample_rate_hz", b"16000"), 123, 40)
        model = AudioFrameMeta(
            call_sid="CA1",
            stream_sid="ST1",
            tenant="acme",
            campaign="q4",
            sequence_number=5,
            chunk=chunk,
            timestamp_ms=ts,
            sample_rate_hz=16000,
            received_at_ms=123,
            offset_ms=40,
        ).to_headers()
        assert fast == model


def test_offsets_from_bytes_and_rate_and_tenant_defaults() -> None:
    session, sink, _ = _session({"campaign": "from-url"})
    session.on_message(_start({"sample_rate": 16000}), 0.0)
    for seq, size in ((2, 3200), (3, 320), (4, 6400)):
        session.on_message(_media(seq, bytes(size)), 0.1)
    metas = [AudioFrameMeta.from_headers(e.headers) for e in sink.audio]
    assert [m.offset_ms for m in metas] == [0, 100, 110]
    assert {(m.tenant, m.campaign, m.sample_rate_hz) for m in metas} == {
        ("default", "from-url", 16000)
    }


def test_media_without_sequence_or_chunk() -> None:
    session, sink, _ = _session({"sample-rate": "16000"})
    session.on_message(_start(), 0.0)  # no media_format: the URL's sample-rate applies
    session.on_message(_media(None, bytes(320), chunk=None, ts=None), 0.1)
    meta = AudioFrameMeta.from_headers(sink.audio[0].headers)
    assert (meta.sample_rate_hz, meta.sequence_number, meta.chunk, meta.timestamp_ms) == (
        16000,
        1,
        None,
        None,
    )


def test_bad_query_sample_rate_falls_back_to_8000() -> None:
    session, sink, _ = _session({"sample-rate": "44100"})
    session.on_message(_start(), 0.0)
    assert sink.calls()[0].sample_rate_hz == 8000


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        ([b"\x00"], 1003),
        ([_start(), _start()], 1008),
        (['{"event":"start","start":{}}'], 1007),
        ([_start(), _media(2**63, bytes(2))], 1007),
        (
            [
                _start(),
                orjson.dumps({"event": "stop", "sequence_number": 2}).decode(),
                _media(3, b""),
            ],
            1008,
        ),
    ],
)
def test_protocol_errors(messages: list[str | bytes], code: int) -> None:
    session, _, _ = _session()
    with pytest.raises(ProtocolError) as exc:
        for message in messages:
            session.on_message(message, 0.0)
    assert exc.value.close_code == code


def test_unknown_event_is_counted_and_skipped() -> None:
    session, sink, stats = _session()
    session.on_message('{"event":"something-new","x":1}', 0.0)
    session.on_message(_start(), 0.0)
    assert stats.unknown_events == {"other": 1}  # a closed label set: names are input
    assert [c.kind for c in sink.calls()] == ["start"]


def test_synthetic_stop_reasons() -> None:
    session, sink, _ = _session()
    session.on_message(_start(), 0.0)
    session.end_reason = "handoff"
    session.end(1.0)
    session.end(2.0)  # idempotent
    stops = [c for c in sink.calls() if c.kind == "stop"]
    assert [s.stop_reason for s in stops] == ["handoff"]
    assert sink.gap_flushes == ["CA1"]

    unstarted, sink2, _ = _session()
    unstarted.end(1.0)
    assert sink2.records == []


def test_dead_letter_keeps_raw_bytes() -> None:
    session, sink, stats = _session()
    session.dead_letter(b"\xff\x00raw", "boom", 0.0)
    topic, value = sink.records[0]
    letter = orjson.loads(value)
    assert topic == "d" and letter["stage"] == "ingest" and letter["error"] == "boom"
    assert base64.b64decode(letter["raw_base64"]) == b"\xff\x00raw"
    assert stats.deadletters == 1


# --- settings and gate -----------------------------------------------------------------------


def test_settings_parse_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSTREAM_INGEST_ALLOW_IPS", "10.0.0.0/8, 192.168.1.5")
    monkeypatch.setenv("AGENTSTREAM_INGEST_BASIC_AUTH", "k1:t1,k2:t2")
    monkeypatch.setenv("AGENTSTREAM_INGEST_VOICEBOT_UPSTREAMS", '{"acme": "wss://bot/acme"}')
    monkeypatch.setenv("AGENTSTREAM_INGEST_HANDOFF_ENABLED", "false")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    settings = IngestSettings()
    assert settings.allow_ips == ("10.0.0.0/8", "192.168.1.5")
    assert settings.credentials() == {"k1": "t1", "k2": "t2"}
    assert "t1" not in repr(settings)
    assert settings.upstream_for("acme") == "wss://bot/acme"
    assert settings.upstream_for("other") is None
    assert settings.handoff_enabled is False
    assert settings.bootstrap_servers == "kafka:9092"
    with pytest.raises(ValidationError):
        IngestSettings(basic_auth="no-colon")
    with pytest.raises(ValidationError):
        IngestSettings(allow_ips="not-an-ip")


def _request(path: str, host: str = "ingest.example:8080", proto: str = "") -> Request:
    headers = Headers([("Host", host)])
    if proto:
        headers["X-Forwarded-Proto"] = proto
    return Request(path, headers)


def test_gate_auth_and_ips() -> None:
    gate = Gate(IngestSettings(basic_auth="k:t", allow_ips="10.1.0.0/16"))
    good = "Basic " + base64.b64encode(b"k:t").decode()
    assert gate.authorized(good)
    assert not gate.authorized("Basic " + base64.b64encode(b"k:x").decode())
    assert not gate.authorized("Basic %%%")
    assert not gate.authorized(None)
    assert gate.ip_allowed("10.1.2.3") and not gate.ip_allowed("10.2.0.1")
    assert not gate.ip_allowed(None)
    assert Gate(IngestSettings()).authorized(None)


def test_stream_url() -> None:
    gate = Gate(IngestSettings(public_url="wss://ingest.example.com"))
    answer = gate.stream_url(_request("/"), {"tenant": "a", "endpoint": "voicebot", "CallSid": "x"})
    assert orjson.loads(answer.body) == {"url": "wss://ingest.example.com/voicebot?tenant=a"}
    from_host = Gate(IngestSettings()).stream_url(_request("/"), {"sample-rate": "16000"})
    assert orjson.loads(from_host.body) == {
        "url": "wss://ingest.example:8080/stream?sample-rate=16000"
    }
    # parameters nobody allow-listed are dropped, never a 4xx
    unknown = gate.stream_url(_request("/"), {"a": "1", "b": "2", "c": "3", "d": "x" * 300})
    assert orjson.loads(unknown.body) == {"url": "wss://ingest.example.com/stream"}
    assert gate.stream_url(_request("/"), {"endpoint": "nope"}).status_code == 400


def test_metrics_render() -> None:
    stats = IngestStats()
    stats.frames_in = 3
    stats.closes[1000] += 2
    stats.produce_latency.observe(0.004)
    text = render(make_registry(stats)).decode()
    assert "ingest_frames_total 3.0" in text
    assert 'ingest_closes_total{code="1000"} 2.0' in text
    assert 'ingest_produce_latency_seconds_bucket{le="0.005"} 1.0' in text


# --- sink shedding (no broker: the sender tasks never get a producer) ------------------------


@contextlib.asynccontextmanager
async def _sink(bound: int) -> AsyncIterator[RecordSink]:
    settings = IngestSettings(buffer_max_bytes=bound, topic_prefix="u.")
    sink = RecordSink(settings, IngestStats(), wall_ms=lambda: 1)
    sink._partitions = {sink.audio_topic: 4, sink.calls_topic: 4, sink.deadletter_topic: 1}
    try:
        yield sink
    finally:
        for queue in sink._queues.values():
            assert queue.task is not None
            queue.task.cancel()
        await asyncio.gather(
            *(q.task for q in sink._queues.values() if q.task), return_exceptions=True
        )


async def test_sink_drops_oldest_audio_across_calls_and_keeps_lifecycle() -> None:
    async with _sink(bound=10 * 1000) as sink:
        tags = {sid: CallTag(sid, "ST-" + sid, "t", "c") for sid in ("A", "B", "C")}
        queues = {sid: sink.queue_for(sink.audio_topic, sid.encode()) for sid in tags}
        t = 0.0
        for seq in range(1, 11):
            for sid in tags:
                t += 1.0
                entry = Outgoing(AUDIO, sid.encode(), bytes(800), t, tags[sid], seq)
                sink.write([entry])
        for _ in range(30):
            sink.send_record(sink.calls_topic, b"A", bytes(900), t)  # far over the bound
        assert sink.stats.frames_dropped == 30  # every audio frame went; lifecycle kept
        assert sum(len(q.pending) for q in queues.values()) == 0
        assert sink.buffered_bytes > 10 * 1000

    async with _sink(bound=10 * 1000) as sink:
        tag = CallTag("A", "ST-A", "t", "c")
        queue = sink.queue_for(sink.audio_topic, b"A")
        for seq in range(1, 21):
            sink.write([Outgoing(AUDIO, b"A", bytes(800), float(seq), tag, seq)])
        kept = [e.seq for e in queue.pending]
        assert kept == list(range(21 - len(kept), 21))  # newest kept, oldest dropped
        dropped = sink.stats.frames_dropped
        assert dropped == 20 - len(kept)
        sink.flush_gap("A")
        calls_queue = sink.queue_for(sink.calls_topic, b"A")
        gap = CallEvent.model_validate(orjson.loads(calls_queue.pending[-1].value))
        assert (gap.kind, gap.dropped_frames, gap.expected_sequence, gap.received_sequence) == (
            "gap",
            dropped,
            1,
            dropped + 1,
        )
        assert gap.params["cause"] == "ingest_buffer_full"
