"""Golden Exotel WebSocket payloads: every documented variant parses; bad ones raise."""

from __future__ import annotations

import base64

import orjson
import pytest

from schemas.errors import ProtocolError
from schemas.exotel import (
    ConnectedEvent,
    DtmfEvent,
    MarkEvent,
    MediaEvent,
    StartEvent,
    StopEvent,
    UnknownEvent,
    clear_message,
    mark_message,
    media_message,
    media_messages,
    parse_event,
)
from schemas.exotel_fields import BadFrameError

pytestmark = pytest.mark.unit

PCM = bytes(range(256)) * 6 + bytes(64)  # 1,600 bytes: 100 ms at 8 kHz
B64 = base64.b64encode(PCM).decode()


def _start(
    sid_key: str = "stream_sid",
    encoding: str = "raw",
    rate: object = 8000,
    seq: object = 1,
    bit_rate: object = "16",
) -> dict[str, object]:
    return {
        "event": "start",
        "sequence_number": seq,
        sid_key: "MZ123",
        "start": {
            sid_key: "MZ123",
            "call_sid": "CA456",
            "account_sid": "AC789",
            "from": "09999999999",
            "to": "08000000000",
            "custom_parameters": {"tenant": "acme", "campaign": "collections", "lang": "en"},
            "media_format": {"encoding": encoding, "sample_rate": rate, "bit_rate": bit_rate},
        },
    }


def test_connected() -> None:
    assert isinstance(parse_event(b'{"event":"connected"}'), ConnectedEvent)


@pytest.mark.parametrize("sid_key", ["stream_sid", "streamSid"])
@pytest.mark.parametrize("encoding", ["raw", "audio/x-raw"])
@pytest.mark.parametrize("rate", [8000, "8000", 16000, "16000", 24000, "24000"])
@pytest.mark.parametrize("seq", [1, "1"])
def test_start_variants(sid_key: str, encoding: str, rate: object, seq: object) -> None:
    event = parse_event(orjson.dumps(_start(sid_key, encoding, rate, seq)))
    assert isinstance(event, StartEvent)
    assert event.sequence_number == 1
    assert event.effective_stream_sid == "MZ123"
    assert event.start.call_sid == "CA456"
    assert event.start.media_format is not None
    assert event.start.media_format.sample_rate_hz == int(str(rate))
    assert event.start.media_format.encoding == encoding
    assert event.start.custom_parameters["tenant"] == "acme"
    assert event.start.from_number == "09999999999"


@pytest.mark.parametrize("bit_rate", ["16", "128", 16, 128, "128kbps"])
def test_start_bit_rate_spellings(bit_rate: object) -> None:
    event = parse_event(orjson.dumps(_start(bit_rate=bit_rate)))
    assert isinstance(event, StartEvent)
    assert event.start.media_format is not None
    assert event.start.media_format.bit_rate == str(bit_rate)


def test_start_minimal_has_no_media_format() -> None:
    event = parse_event(b'{"event":"start","start":{"call_sid":"CA1"}}')
    assert isinstance(event, StartEvent)
    assert event.start.media_format is None  # the session falls back to the URL, then 8000
    assert event.effective_stream_sid == ""
    assert event.call_identity() == ("CA1", "call_sid")


def test_unknown_fields_ignored() -> None:
    payload = _start()
    payload["brand_new_field"] = {"x": 1}
    payload["start"]["whatever"] = "y"  # type: ignore[index]
    assert isinstance(parse_event(orjson.dumps(payload)), StartEvent)


@pytest.mark.parametrize(
    "raw",
    [
        {
            "event": "media",
            "sequence_number": 3,
            "stream_sid": "MZ1",
            "media": {"chunk": 2, "timestamp": 200, "payload": B64},
        },
        {
            "event": "media",
            "sequence_number": "3",
            "streamSid": "MZ1",
            "media": {"chunk": "2", "timestamp": "200", "payload": B64},
        },
    ],
)
def test_media_variants(raw: dict[str, object]) -> None:
    event = parse_event(orjson.dumps(raw))
    assert isinstance(event, MediaEvent)
    assert (event.sequence_number, event.stream_sid) == (3, "MZ1")
    assert (event.media.chunk, event.media.timestamp_ms) == (2, 200)
    assert event.media.pcm16() == PCM


def test_dtmf_mark_stop() -> None:
    dtmf = parse_event(
        b'{"event":"dtmf","sequence_number":"5","streamSid":"MZ1",'
        b'"dtmf":{"digit":"0","duration":"250"}}'
    )
    assert isinstance(dtmf, DtmfEvent)
    assert (dtmf.dtmf.digit, dtmf.dtmf.duration_ms) == ("0", 250)
    mark = parse_event(
        b'{"event":"mark","sequence_number":6,"stream_sid":"MZ1","mark":{"name":"m1"}}'
    )
    assert isinstance(mark, MarkEvent)
    assert mark.mark.name == "m1"
    for reason in ("stopped", "callended"):
        stop = parse_event(
            orjson.dumps(
                {
                    "event": "stop",
                    "sequence_number": 9,
                    "stream_sid": "MZ1",
                    "stop": {"call_sid": "CA1", "account_sid": "AC1", "reason": reason},
                }
            )
        )
        assert isinstance(stop, StopEvent)
        assert stop.stop.reason == reason
        assert stop.stop.call_sid == "CA1"


def test_digit_as_number() -> None:
    event = parse_event(b'{"event":"dtmf","dtmf":{"digit":5}}')
    assert isinstance(event, DtmfEvent)
    assert event.dtmf.digit == "5"


def test_unknown_event_is_not_an_error() -> None:
    event = parse_event(b'{"event":"transcription","foo":1}')
    assert isinstance(event, UnknownEvent)
    assert event.event == "transcription"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'{"no_event":1}', "no string 'event'"),
        (b'{"event":"media","media":{"payload":12}}', "payload"),
        (b'{"event":"media"}', "media"),
        (b'{"event":"media","media":"AAAA"}', "media"),
        (b'{"event":"dtmf","dtmf":{}}', "digit"),
        (b'{"event":"mark"}', "mark"),
    ],
)
def test_undecodable_messages_are_bad_frames(raw: bytes, fragment: str) -> None:
    """Dead-lettered by the session while the call goes on (not a close)."""
    with pytest.raises(BadFrameError) as info:
        parse_event(raw)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"event":"media","sequence_number":%d,"media":{"payload":""}}' % 2**63, "64-bit"),
        (b'{"event":"media","media":{"chunk":%d,"payload":""}}' % (2**64 - 1), "64-bit"),
        (b'{"event":"media","media":{"timestamp":-1e30,"payload":""}}', "64-bit"),
        (b'{"event":"media","media":{"timestamp":"%s","payload":""}}' % (b"9" * 60), "64-bit"),
        (b'{"event":"start","sequence_number":%d,"start":{"call_sid":"C"}}' % 2**63, "64-bit"),
        (b'{"event":"start","start":{"call_sid":"%s"}}' % (b"C" * 129), "128 characters"),
        (b'{"event":"media","stream_sid":"%s","media":{"payload":""}}' % (b"S" * 129), "128"),
        (b'{"event":"start","start":{"custom_parameters":{"k":"%s"}}}' % (b"v" * 600), "too long"),
        (b'{"event":"stop","stop":{"reason":"%s"}}' % (b"r" * 300), "256 characters"),
    ],
)  # fmt: skip
def test_unbounded_values_close_the_call(raw: bytes, fragment: str) -> None:
    """Out-of-range integers and over-long strings: 1007 with a reason, never a crash."""
    with pytest.raises(ProtocolError) as info:
        parse_event(raw)
    assert not isinstance(info.value, BadFrameError)
    assert info.value.close_code == 1007
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("raw", "seq"),
    [
        (b'{"event":"media","sequence_number":"three","media":{"payload":""}}', None),
        (b'{"event":"media","sequence_number":"","media":{"payload":""}}', None),
        (b'{"event":"media","media":{"payload":""}}', None),
        (b'{"event":"media","sequence_number":1.5,"media":{"payload":""}}', 1),
        (b'{"event":"media","sequenceNumber":" 7 ","media":{"payload":""}}', 7),
        (b'{"event":"media","sequence_number":true,"media":{"payload":""}}', None),
        (b'{"event":"media","sequence_number":"9.0","media":{"payload":""}}', 9),
    ],
)
def test_unreadable_sequence_numbers_fall_back_to_none(raw: bytes, seq: int | None) -> None:
    event = parse_event(raw)
    assert isinstance(event, MediaEvent)
    assert event.sequence_number == seq


def test_absurd_nesting_is_a_policy_violation() -> None:
    nested: dict[str, object] = {"event": "media"}
    node = nested
    for _ in range(50):
        child: dict[str, object] = {}
        node["x"] = child
        node = child
    with pytest.raises(ProtocolError) as info:
        parse_event(orjson.dumps(nested))
    assert info.value.close_code == 1008


@pytest.mark.parametrize("payload", ["!!!notbase64", "AAAAA", "A"])
def test_bad_base64(payload: str) -> None:
    event = parse_event(orjson.dumps({"event": "media", "media": {"payload": payload}}))
    assert isinstance(event, MediaEvent)
    with pytest.raises(BadFrameError, match="base64"):
        event.media.pcm16()


@pytest.mark.parametrize(
    "payload",
    [
        B64[:-2],  # missing padding (B64 of 1,600 bytes ends in "==")
        " " + B64[:100] + "\n" + B64[100:] + "\r\n",  # whitespace and line breaks
        B64.replace("+", "-").replace("/", "_"),  # URL-safe alphabet
        "\t".join(B64[i : i + 76] for i in range(0, len(B64), 76)),  # MIME-style lines
    ],
)
def test_base64_variants_are_repaired(payload: str) -> None:
    event = parse_event(orjson.dumps({"event": "media", "media": {"payload": payload}}))
    assert isinstance(event, MediaEvent)
    assert event.media.pcm16() == PCM


def test_odd_length_pcm() -> None:
    odd = base64.b64encode(b"\x00\x01\x02").decode()
    event = parse_event(orjson.dumps({"event": "media", "media": {"payload": odd}}))
    assert isinstance(event, MediaEvent)
    with pytest.raises(BadFrameError, match="odd length"):
        event.media.pcm16()


def test_outbound_messages() -> None:
    audio = bytes(3200)
    msg = orjson.loads(media_message("MZ1", audio))
    assert msg == {
        "event": "media",
        "stream_sid": "MZ1",
        "media": {"payload": base64.b64encode(audio).decode()},
    }
    assert orjson.loads(mark_message("MZ1", "n")) == {
        "event": "mark",
        "stream_sid": "MZ1",
        "mark": {"name": "n"},
    }
    assert orjson.loads(clear_message("MZ1")) == {"event": "clear", "stream_sid": "MZ1"}
    for bad in (100, 640, 3210, 100 * 1024 + 320):
        with pytest.raises(ValueError, match="320"):
            media_message("MZ1", bytes(bad))


@pytest.mark.parametrize("size", [0, 1, 320, 3199, 3200, 5000, 64000, 250_000])
def test_outbound_chunks_fit_exotel_bounds(size: int) -> None:
    """Frames the engine builds: >= 3.2 KB, <= 100 KB, multiples of 320, stream_sid spelling."""
    pcm = bytes(i % 251 for i in range(size))
    messages = media_messages("MZ1", pcm, chunk_bytes=64000)
    joined = b""
    for raw in messages:
        msg = orjson.loads(raw)
        assert set(msg) == {"event", "media", "stream_sid"}
        chunk = base64.b64decode(msg["media"]["payload"])
        assert 3200 <= len(chunk) <= 100 * 1024 and len(chunk) % 320 == 0
        joined += chunk
    assert joined[:size] == pcm and not joined[size:].strip(b"\x00")


def test_the_shallow_check_skips_only_what_nests_at_most_three_levels() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from schemas.exotel import _depth, _shallow

    scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=3)
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner),
        max_leaves=12,
    )

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.text(max_size=2), values, max_size=4))
    def check(data: dict[str, object]) -> None:
        assert not _shallow(data) or _depth(data, 50) <= 3

    check()
    assert _shallow(orjson.loads(media_message("MZ", PCM * 2)))


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("YWJj====", b"abc"),
        ("YW Jj", b"abc"),
        ("YWJj\n", b"abc"),
        ("YWJjZA", b"abcd"),
        ("-_-_", b"\xfb\xff\xbf"),
        ("é", None),
    ],
)
def test_payloads_the_fast_decoder_refuses_are_repaired(
    payload: str, expected: bytes | None
) -> None:
    event = parse_event(orjson.dumps({"event": "media", "media": {"payload": payload}}))
    assert isinstance(event, MediaEvent)
    if expected is None:
        with pytest.raises(BadFrameError):
            event.media.audio()
    else:
        assert event.media.audio() == expected
