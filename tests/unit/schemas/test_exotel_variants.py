"""Exotel message variants seen in the wild parse (docs/ingest.md names each one's source)."""

from __future__ import annotations

import base64

import orjson
import pytest

from schemas.exotel import (
    ClearEvent,
    MediaEvent,
    StartEvent,
    StopEvent,
    classify_encoding,
    parse_event,
    parse_rate,
)

pytestmark = pytest.mark.unit

PCM = bytes(range(256)) * 6 + bytes(64)
B64 = base64.b64encode(PCM).decode()


def _start(encoding: str = "raw", rate: object = 8000) -> dict[str, object]:
    return {
        "event": "start",
        "sequence_number": 1,
        "stream_sid": "MZ123",
        "start": {
            "stream_sid": "MZ123",
            "call_sid": "CA456",
            "custom_parameters": {"tenant": "acme"},
            "media_format": {"encoding": encoding, "sample_rate": rate, "bit_rate": "16"},
        },
    }


@pytest.mark.parametrize(
    ("encoding", "codec", "rate"),
    [
        ("raw", "pcm16", None),
        ("audio/x-raw", "pcm16", None),
        ("base64", "pcm16", None),
        ("pcm16", "pcm16", None),
        ("slin", "pcm16", None),
        ("audio/pcm", "pcm16", None),
        ("audio/x-l16", "pcm16", None),
        ("audio/L16;rate=16000", "pcm16", 16000),
        ("audio/L16; rate=8000", "pcm16", 8000),
        ("audio/x-mulaw", "mulaw", None),
        ("audio/x-mulaw;rate=8000", "mulaw", 8000),
        ("audio/x-alaw;rate=8000", "alaw", 8000),
        ("PCMU", "mulaw", None),
        ("", "pcm16", None),
        (None, "pcm16", None),
        ("opus", "unknown", None),
        ("audio/whatever;rate=banana", "unknown", None),
    ],
)
def test_encodings(encoding: str | None, codec: str, rate: int | None) -> None:
    assert classify_encoding(encoding) == (codec, rate)


@pytest.mark.parametrize(
    ("value", "rate"),
    [
        (8000, 8000),
        ("16000", 16000),
        ("8000Hz", 8000),
        ("8k", 8000),
        ("16kHz", 16000),
        ("16 KHZ", 16000),
        (24000.0, 24000),
        ("", None),
        (None, None),
        ("44100", None),
        ("fast", None),
        (True, None),
    ],
)
def test_sample_rate_spellings(value: object, rate: int | None) -> None:
    assert parse_rate(value) == rate


def test_encoding_rate_wins_over_sample_rate() -> None:
    payload = _start(encoding="audio/L16;rate=16000", rate=8000)
    event = parse_event(orjson.dumps(payload))
    assert isinstance(event, StartEvent) and event.start.media_format is not None
    assert event.start.media_format.sample_rate_hz == 16000


@pytest.mark.parametrize(
    ("custom", "expected"),
    [
        (None, {}),
        ("", {}),
        ("tenant=acme&campaign=q4", {"tenant": "acme", "campaign": "q4"}),
        ('{"tenant": "acme"}', {"tenant": "acme"}),
        ({"resume_id": ""}, {"resume_id": ""}),
        ({"n": 5, "x": None, "o": {"a": 1}}, {"n": "5", "x": "", "o": '{"a":1}'}),
        (["a"], {}),
        ("{broken", {}),
    ],
)
def test_custom_parameters_shapes(custom: object, expected: dict[str, str]) -> None:
    payload = _start()
    payload["start"]["custom_parameters"] = custom  # type: ignore[index]
    event = parse_event(orjson.dumps(payload))
    assert isinstance(event, StartEvent)
    assert event.start.custom_parameters == expected


@pytest.mark.parametrize("media_format", [None, "", 5, [], {}])
def test_media_format_null_or_odd(media_format: object) -> None:
    payload = _start()
    payload["start"]["media_format"] = media_format  # type: ignore[index]
    event = parse_event(orjson.dumps(payload))
    assert isinstance(event, StartEvent)
    fmt = event.start.media_format
    assert fmt is None or fmt.sample_rate_hz is None


def test_camel_case_everywhere() -> None:
    raw = {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": "MZ9",
        "start": {
            "streamSid": "MZ9",
            "callSid": "CA9",
            "accountSid": "AC9",
            "customParameters": {"tenant": "acme"},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": "8000", "bitRate": 64},
        },
    }
    event = parse_event(orjson.dumps(raw))
    assert isinstance(event, StartEvent) and event.start.media_format is not None
    assert event.sequence_number == 1
    assert event.call_identity() == ("CA9", "callSid")
    assert event.start.account_sid == "AC9"
    assert event.start.custom_parameters == {"tenant": "acme"}
    assert (event.start.media_format.codec, event.start.media_format.sample_rate_hz) == (
        "mulaw",
        8000,
    )


@pytest.mark.parametrize(
    ("start", "url_sid", "expected"),
    [
        ({"call_sid": "A", "callSid": "B", "leg_sid": "C"}, "U", ("A", "call_sid")),
        ({"callSid": "B", "leg_sid": "C"}, "U", ("B", "callSid")),
        ({"leg_sid": "C", "stream_sid": "S"}, "U", ("C", "leg_sid")),
        ({"call_sid": "", "stream_sid": "S"}, "U", ("U", "url_CallSid")),
        ({"stream_sid": "S"}, None, ("S", "stream_sid")),
        ({}, None, None),
    ],
)
def test_call_identity_fallbacks(
    start: dict[str, str], url_sid: str | None, expected: tuple[str, str] | None
) -> None:
    event = parse_event(orjson.dumps({"event": "start", "start": start}))
    assert isinstance(event, StartEvent)
    assert event.call_identity(url_sid) == expected


@pytest.mark.parametrize(
    ("timestamp", "expected"), [(120.75, 120), ("120.5", 120), ("", None), (None, None)]
)
def test_fractional_or_empty_timestamps(timestamp: object, expected: int | None) -> None:
    raw = {"event": "media", "media": {"timestamp": timestamp, "chunk": "", "payload": B64}}
    event = parse_event(orjson.dumps(raw))
    assert isinstance(event, MediaEvent)
    assert (event.media.timestamp_ms, event.media.chunk) == (expected, None)


def test_track_and_clear_and_bare_stop() -> None:
    event = parse_event(
        orjson.dumps({"event": "media", "media": {"track": "outbound", "payload": B64}})
    )
    assert isinstance(event, MediaEvent) and event.media.track == "outbound"
    assert isinstance(parse_event(b'{"event":"clear","stream_sid":"MZ1"}'), ClearEvent)
    stop = parse_event(b'{"event":"stop","stop":{"reason":"callended"}}')
    assert isinstance(stop, StopEvent) and stop.stop.reason == "callended"
    assert isinstance(parse_event(b'{"event":"stop"}'), StopEvent)
