"""Passthru / Connect / StatusCallback parameters in every documented form."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import orjson
import pytest

from schemas.callbacks import (
    ConnectAnswer,
    ConnectDestination,
    ParallelRinging,
    StartCallPlayback,
    flatten,
    parse_callback,
    parse_json_body,
)
from schemas.errors import ProtocolError

pytestmark = pytest.mark.unit

BRACKETS = {
    "CallSid": "CA1",
    "CallFrom": "09999999999",
    "CallTo": "08000000000",
    "Direction": "incoming",
    "digits": '"1234"',
    "DialCallDuration": "12",
    "Stream[StreamSID]": "MZ1",
    "Stream[Status]": "completed",
    "Stream[Duration]": "42",
    "Stream[DisconnectedBy]": "bot",
    "Stream[RecordingUrl]": "https://x/rec.wav",
    "Stream[StreamUrl]": "wss://x/stream",
    "Stream[DetailedStatus]": "ok",
    "Stream[Error]": "",
}


def _check(params: dict[str, str]) -> None:
    cb = parse_callback(params)
    assert cb.call_sid == "CA1"
    assert cb.digits == "1234"
    assert cb.stream.stream_sid == "MZ1"
    assert cb.stream.status == "completed"
    assert cb.stream.duration_s == 42
    assert cb.stream.disconnected_by == "bot"


def test_query_with_bracket_fields() -> None:
    raw = flatten(parse_qsl(urlencode(BRACKETS), keep_blank_values=True))
    _check(raw)
    cb = parse_callback(raw)
    assert cb.direction == "incoming"
    assert cb.dial_call_duration_s == 12
    assert cb.raw["Stream[RecordingUrl]"] == "https://x/rec.wav"


def test_stream_as_json_string() -> None:
    stream = {"StreamSID": "MZ1", "Status": "completed", "Duration": 42, "DisconnectedBy": "bot"}
    raw = {"CallSid": "CA1", "digits": '"1234"', "Stream": orjson.dumps(stream).decode()}
    _check(raw)


def test_json_body_with_nested_stream() -> None:
    body = orjson.dumps(
        {
            "CallSid": "CA1",
            "digits": '"1234"',
            "Stream": {
                "StreamSID": "MZ1",
                "Status": "completed",
                "Duration": "42",
                "DisconnectedBy": "bot",
            },
        }
    )
    _check(parse_json_body(body))


def test_from_to_aliases_and_missing_everything() -> None:
    cb = parse_callback({"From": "1", "To": "2"})
    assert (cb.call_from, cb.call_to, cb.call_sid) == ("1", "2", None)
    empty = parse_callback({})
    assert empty.call_sid is None and empty.stream.stream_sid is None


@pytest.mark.parametrize(
    "raw",
    [
        {"Stream": "{not json"},
        {"Stream": "[1,2]"},
    ],
)
def test_malformed_stream_block(raw: dict[str, str]) -> None:
    with pytest.raises(ProtocolError):
        parse_callback(raw)


def test_malformed_json_body() -> None:
    with pytest.raises(ProtocolError):
        parse_json_body(b"{oops")
    with pytest.raises(ProtocolError):
        parse_json_body(b"[1]")
    assert parse_json_body(b"") == {}


def test_limits() -> None:
    with pytest.raises(ProtocolError):
        flatten((str(i), "x") for i in range(500))
    with pytest.raises(ProtocolError):
        flatten([("k", "x" * 10_000)])


def test_non_numeric_duration_is_tolerated() -> None:
    assert parse_callback({"Stream[Duration]": "abc"}).stream.duration_s is None


def test_connect_answer_numbers_and_trunk() -> None:
    answer = ConnectAnswer(
        destination=ConnectDestination(numbers=["+919000000001", "+919000000002"]),
        outgoing_phone_number="08000000000",
        parallel_ringing=ParallelRinging(activate=True, max_parallel_attempts=2),
        start_call_playback=StartCallPlayback(playback_to="callee", value="Angry caller"),
        music_on_hold={"type": "operator_tone"},
    )
    data = orjson.loads(answer.to_json())
    assert data["destination"] == {"numbers": ["+919000000001", "+919000000002"]}
    assert data["parallel_ringing"] == {"activate": True, "max_parallel_attempts": 2}
    assert data["start_call_playback"]["value"] == "Angry caller"
    assert data["fetch_after_attempt"] is False
    trunk = orjson.loads(ConnectAnswer(destination=ConnectDestination(trunk="trunk-1")).to_json())
    assert trunk["destination"] == {"trunk": "trunk-1"}


def test_post_json_stream_start_maps_onto_the_query_fields() -> None:
    body = orjson.dumps(
        {
            "CallSid": "CA1",
            "StreamSid": "ST1",
            "StreamUrl": "wss://host/stream",
            "AccountSid": "acct",
            "EventType": "stream-start",
        }
    )
    params = parse_callback(parse_json_body(body))
    query = parse_callback(
        {"CallSid": "CA1", "Stream[StreamSID]": "ST1", "Stream[StreamUrl]": "wss://host/stream"}
    )
    assert params.stream.stream_sid == query.stream.stream_sid == "ST1"
    assert params.stream.stream_url == query.stream.stream_url
    assert params.account_sid == "acct" and params.event_type == "stream-start"
    # the Stream block wins over the flat spelling when both come
    both = parse_callback({"Stream[StreamSID]": "A", "StreamSid": "B"})
    assert both.stream.stream_sid == "A"


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999", "9" * 100, "1e13", "abc"])
def test_numbers_that_are_not_numbers_read_as_absent(value: str) -> None:
    params = parse_callback({"DialCallDuration": value, "Stream[Duration]": value})
    assert params.dial_call_duration_s is None and params.stream.duration_s is None
    assert parse_callback({"DialCallDuration": '"42.0"'}).dial_call_duration_s == 42


def test_digits_are_bounded_per_callback() -> None:
    assert parse_callback({"digits": '"' + "1" * 5000 + '"'}).digits == "1" * 64
    assert parse_callback({"digits": '""'}).digits == ""
