"""Each ingest fallback, on a StreamSession without sockets or a broker (issue 17 / 18)."""

from __future__ import annotations

import base64
import logging
from typing import Any

import orjson
import pytest

from ingest.codecs import alaw_to_pcm16, mulaw_to_pcm16
from ingest.metrics import IngestStats, make_registry, render
from ingest.outgoing import AUDIO, Outgoing
from ingest.session import StreamSession
from ingest.start import choose_rate
from schemas.errors import ProtocolError
from schemas.records import AudioFrameMeta, CallEvent, audio_headers, static_audio_headers
from tests.integration.ingest.conformance.g711_reference import decode_alaw, decode_mulaw

pytestmark = pytest.mark.unit


def _start(start: dict[str, Any], **top: Any) -> str:
    return orjson.dumps({"event": "start", "sequence_number": 1, **top, "start": start}).decode()


def _media(payload: bytes | str, seq: Any = None, **media: Any) -> str:
    text = payload if isinstance(payload, str) else base64.b64encode(payload).decode()
    event: dict[str, Any] = {"event": "media", "media": {"payload": text, **media}}
    if seq is not None:
        event["sequence_number"] = seq
    return orjson.dumps(event).decode()


class Harness:
    def __init__(self, query: dict[str, str] | None = None, max_bad_frames: int = 50) -> None:
        self.stats = IngestStats()
        self.session = StreamSession(
            self.stats,
            "stream",
            query or {},
            wall_ms=lambda: 1_700_000_000_000,
            max_bad_frames=max_bad_frames,
        )

    def send(self, *messages: str) -> None:
        for message in messages:
            self.session.on_message(message, 0.0)

    def calls(self) -> list[CallEvent]:
        return [
            CallEvent.model_validate(orjson.loads(o.value))
            for o in self.session.outbox
            if o.topic_kind == "calls"
        ]

    def letters(self) -> list[dict[str, Any]]:
        return [orjson.loads(o.value) for o in self.session.outbox if o.topic_kind == "deadletter"]

    def frames(self) -> list[tuple[bytes, AudioFrameMeta]]:
        out: list[tuple[bytes, AudioFrameMeta]] = []
        for o in self.session.outbox:
            if o.topic_kind == AUDIO:
                out.append((o.value, _meta(o)))
        return out


def _meta(o: Outgoing) -> AudioFrameMeta:
    tag = o.call
    assert tag is not None
    track = "outbound" if o.outbound else "inbound"
    static = static_audio_headers(
        tag.call_sid, tag.stream_sid, tag.tenant, tag.campaign, track, tag.encoding
    )
    rate = ("as-sample_rate_hz", str(tag.sample_rate_hz).encode())
    headers = audio_headers(
        static, o.seq, o.chunk, o.media_timestamp_ms, rate, o.received_at_ms, o.offset_ms
    )
    return AudioFrameMeta.from_headers(headers)


# --- encodings --------------------------------------------------------------------------------

ALL_CODES = bytes(range(256)) * 4


@pytest.mark.parametrize(
    ("encoding", "reference"),
    [
        ("audio/x-mulaw", decode_mulaw),
        ("audio/x-mulaw;rate=8000", decode_mulaw),
        ("audio/x-alaw", decode_alaw),
    ],
)
def test_g711_is_decoded_to_pcm16(encoding: str, reference: Any) -> None:
    h = Harness()
    h.send(_start({"call_sid": "CA1", "media_format": {"encoding": encoding}}))
    h.send(_media(ALL_CODES, seq=2))
    ((pcm, meta),) = h.frames()
    assert pcm == reference(ALL_CODES)
    assert (meta.encoding, meta.sample_rate_hz, meta.offset_ms) == (encoding, 8000, 0)
    start = h.calls()[0]
    assert (start.encoding, start.codec) == (encoding, "mulaw" if "mulaw" in encoding else "alaw")


def test_codec_tables_match_the_reference_for_every_code() -> None:
    codes = bytes(range(256))
    assert mulaw_to_pcm16(codes) == decode_mulaw(codes)
    assert alaw_to_pcm16(codes) == decode_alaw(codes)


def test_odd_length_mulaw_is_fine() -> None:
    h = Harness()
    h.send(_start({"call_sid": "CA1", "media_format": {"encoding": "audio/x-mulaw"}}))
    h.send(_media(bytes(801), seq=2))
    assert len(h.frames()[0][0]) == 1602


def test_unknown_encoding_is_pcm16_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    with caplog.at_level(logging.WARNING, logger="ingest.session"):
        h.send(_start({"call_sid": "CA1", "media_format": {"encoding": "opus"}}))
        h.send(*(_media(bytes(1600), seq=i) for i in range(2, 6)))
    assert [pcm for pcm, _ in h.frames()] == [bytes(1600)] * 4
    assert h.stats.codecs == {"unknown": 1}
    assert sum("unknown media_format.encoding" in r.message for r in caplog.records) == 1
    assert (
        'ingest_calls_by_codec_total{codec="unknown"} 1.0'
        in render(make_registry(h.stats)).decode()
    )


@pytest.mark.parametrize(
    ("encoding", "rate"), [("audio/L16;rate=16000", 16000), ("audio/x-l16", 8000)]
)
def test_l16_spellings_take_the_rate_from_the_encoding(encoding: str, rate: int) -> None:
    h = Harness()
    h.send(_start({"call_sid": "CA1", "media_format": {"encoding": encoding}}))
    h.send(_media(bytes(320), seq=2))
    assert h.frames()[0][1].sample_rate_hz == rate


# --- identity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "top", "query", "sid", "source"),
    [
        ({"call_sid": "A", "callSid": "B"}, {}, {}, "A", "call_sid"),
        ({"callSid": "B", "leg_sid": "C"}, {}, {}, "B", "callSid"),
        ({"leg_sid": "C"}, {"stream_sid": "S"}, {"CallSid": "U"}, "C", "leg_sid"),
        ({"stream_sid": "S"}, {}, {"CallSid": "U"}, "U", "url_CallSid"),
        ({}, {"streamSid": "S"}, {}, "S", "stream_sid"),
    ],
)
def test_call_sid_fallbacks_are_recorded(
    start: dict[str, str], top: dict[str, str], query: dict[str, str], sid: str, source: str
) -> None:
    h = Harness(query)
    h.send(_start(start, **top))
    event = h.calls()[0]
    assert (event.call_sid, event.call_sid_source) == (sid, source)
    assert h.stats.call_sid_sources == {source: 1}


def test_start_without_any_identity_closes_1007() -> None:
    h = Harness()
    with pytest.raises(ProtocolError) as info:
        h.send(_start({"from": "0999"}))
    assert info.value.close_code == 1007 and "call_sid" in info.value.reason


# --- tolerant fields --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample_rate", "query", "rate"),
    [
        ("8000Hz", {}, 8000),
        ("8k", {}, 8000),
        ("16kHz", {}, 16000),
        ("", {"sample-rate": "16000"}, 16000),
        ("", {}, 8000),
        ("garbage", {"sample-rate": "nope"}, 8000),
    ],
)
def test_sample_rate_fallbacks(sample_rate: str, query: dict[str, str], rate: int) -> None:
    h = Harness(query)
    h.send(_start({"call_sid": "CA1", "media_format": {"sample_rate": sample_rate}}))
    assert h.calls()[0].sample_rate_hz == rate


@pytest.mark.parametrize("custom", [None, "", "tenant=acme", {"tenant": "acme"}])
@pytest.mark.parametrize("media_format", [None, {}])
def test_null_custom_parameters_and_media_format_do_not_close(
    custom: Any, media_format: Any
) -> None:
    h = Harness({"sample-rate": "16000"})
    h.send(_start({"call_sid": "CA1", "custom_parameters": custom, "media_format": media_format}))
    h.send(_media(bytes(3200), seq="", timestamp="", chunk=""))
    h.send(_media(bytes(3200), timestamp=100.5))
    (_, first), (_, second) = h.frames()
    assert first.sample_rate_hz == 16000
    assert first.tenant == ("acme" if custom else "default")
    assert (first.sequence_number, first.timestamp_ms, first.chunk) == (1, None, None)
    assert (second.sequence_number, second.timestamp_ms, second.offset_ms) == (2, 100, 100)


# --- bad frames -------------------------------------------------------------------------------


def test_undecodable_frames_are_dead_lettered_and_the_call_goes_on() -> None:
    h = Harness()
    h.send(_start({"call_sid": "CA1"}))
    h.send(_media("%%%not-base64", seq=2))
    h.send("{not json")
    h.send(_media(bytes(3), seq=3))  # odd-length PCM16
    h.send(_media(b"", seq=4))
    h.send(_media(bytes(1600), seq=5))
    assert len(h.frames()) == 1
    assert h.stats.bad_frames == 4 and h.session.bad_run == 0
    reasons = [letter["error"] for letter in h.letters()]
    assert len(reasons) == 4
    assert any("base64" in r for r in reasons) and any("JSON" in r for r in reasons)


def test_a_run_of_bad_frames_closes_1007_with_the_reason() -> None:
    h = Harness(max_bad_frames=5)
    h.send(_start({"call_sid": "CA1"}))
    for _ in range(4):
        h.send(_media("!!", seq=2))
    h.send(_media(bytes(320), seq=3))  # a good frame resets the run
    for _ in range(4):
        h.send(_media("!!"))
    with pytest.raises(ProtocolError) as info:
        h.send(_media("!!"))
    assert info.value.close_code == 1007
    assert "5 undecodable frames in a row" in info.value.reason and "base64" in info.value.reason
    assert len(h.letters()) == 9  # each one dead-lettered, none twice


@pytest.mark.parametrize("event", ["media", "stop", "dtmf", "mark"])
def test_events_before_start_are_counted_once_per_connection(event: str) -> None:
    h = Harness()
    body = {
        "media": {"media": {"payload": "AAAA"}},
        "stop": {"stop": {"reason": "callended"}},
        "dtmf": {"dtmf": {"digit": "1"}},
        "mark": {"mark": {"name": "m"}},
    }[event]
    for _ in range(20):
        h.send(orjson.dumps({"event": event, **body}).decode())
    assert h.stats.events_before_start == 1
    assert h.session.outbox == []  # nothing dead-lettered per frame
    h.send(_start({"call_sid": "CA1"}))
    assert [c.kind for c in h.calls()] == ["start"]


def test_integer_past_64_bits_closes_1007_not_a_crash() -> None:
    h = Harness()
    h.send(_start({"call_sid": "CA1"}))
    with pytest.raises(ProtocolError) as info:
        h.send(_media(bytes(2), seq=2**63))
    assert info.value.close_code == 1007 and "64-bit" in info.value.reason


def test_overlong_tenant_from_the_url_closes_1007() -> None:
    h = Harness({"tenant": "t" * 200})
    with pytest.raises(ProtocolError, match="tenant longer than 128"):
        h.send(_start({"call_sid": "CA1"}))


# --- sample-rate disagreement, tracks, clear ----------------------------------------------------


@pytest.mark.parametrize(
    ("fmt_rate", "url_rate", "frame", "chosen"),
    [(8000, 16000, 3200, 16000), (8000, 16000, 1600, 8000), (16000, 8000, 1600, 8000)],
)
def test_rate_disagreement_is_decided_by_frame_size(
    fmt_rate: int, url_rate: int, frame: int, chosen: int, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness({"sample-rate": str(url_rate)})
    with caplog.at_level(logging.WARNING, logger="ingest.session"):
        h.send(_start({"call_sid": "CA1", "media_format": {"sample_rate": fmt_rate}}))
        assert h.calls() == []  # the start waits for the first frame
        h.send(*(_media(bytes(frame), seq=i) for i in range(2, 5)))
    assert h.calls()[0].sample_rate_hz == chosen
    assert {meta.sample_rate_hz for _, meta in h.frames()} == {chosen}
    assert [meta.offset_ms for _, meta in h.frames()] == [0, 100, 200]
    assert sum("deciding from the first frame" in r.message for r in caplog.records) == 1
    assert h.stats.rate_disagreements == 1


def test_rate_disagreement_without_frames_keeps_media_format() -> None:
    h = Harness({"sample-rate": "16000"})
    h.send(_start({"call_sid": "CA1", "media_format": {"sample_rate": 8000}}))
    h.send(orjson.dumps({"event": "dtmf", "dtmf": {"digit": "3"}}).decode())
    assert [(c.kind, c.sample_rate_hz) for c in h.calls()] == [("start", 8000), ("dtmf", None)]


def test_choose_rate() -> None:
    assert choose_rate(4800, 8000, 24000) == 24000
    assert choose_rate(320, 8000, 16000) == 8000  # 20 ms frames at 8 kHz


def test_outbound_track_is_kept_with_a_track_header_off_the_caller_clock() -> None:
    h = Harness()
    h.send(_start({"call_sid": "CA1"}))
    h.send(_media(bytes(1600), seq=2, track="inbound"))
    h.send(_media(bytes(3200), seq=3, track="outbound"))
    h.send(_media(bytes(1600), seq=4))
    tracks = [(meta.track, meta.offset_ms) for _, meta in h.frames()]
    assert tracks == [("inbound", 0), ("outbound", 0), ("inbound", 100)]
    assert h.stats.outbound_frames == 1


@pytest.mark.parametrize(
    "numbering",
    [
        [("in", 2), ("out", 3), ("in", 4), ("out", 5)],
        [("in", 2), ("out", 2), ("in", 3), ("out", 3)],
    ],
)
def test_tracks_numbered_together_or_apart_lose_nothing(numbering: list[tuple[str, int]]) -> None:
    h = Harness()
    h.send(_start({"call_sid": "CA1"}))
    for track, seq in numbering:
        h.send(_media(bytes(1600), seq=seq, track="outbound" if track == "out" else "inbound"))
    assert len(h.frames()) == 4
    assert [c.kind for c in h.calls()] == ["start"]  # no false gap or duplicate


def test_clear_from_exotel_is_known() -> None:
    h = Harness()
    h.send(_start({"call_sid": "CA1"}))
    h.send('{"event":"clear","stream_sid":"S"}')
    assert h.stats.unknown_events == {}


def test_close_code_labels_are_a_closed_set() -> None:
    stats = IngestStats()
    for code in (1000, 4321, 3999, 1008):
        stats.count_close(code)
    assert stats.closes == {1000: 1, "other": 2, 1008: 1}


def test_json_in_a_binary_frame_capitalised_events_and_a_flat_start() -> None:
    h = Harness()
    flat = {
        "event": "Start",
        "streamId": "MZ1",
        "callSid": "CA1",
        "mediaFormat": {"encoding": "raw"},
    }
    h.session.on_message(orjson.dumps(flat), 0.0)
    h.session.on_message(_media(bytes(1600), seq=2).replace('"media"', '"MEDIA"', 1).encode(), 0.0)
    ((_, meta),) = h.frames()
    assert (meta.call_sid, meta.stream_sid, meta.encoding) == ("CA1", "MZ1", "raw")
    with pytest.raises(ProtocolError) as info:
        h.session.on_message(b"\x00\x01binary", 0.0)
    assert info.value.close_code == 1003
