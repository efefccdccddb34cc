"""Property-based: no Exotel message, however odd, gets past the session as anything but a
record, a dead letter or a ProtocolError (a close with a reason) - never a handler crash."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest

from ingest.metrics import IngestStats
from ingest.outgoing import AUDIO
from ingest.session import StreamSession
from schemas.errors import ProtocolError
from schemas.records import audio_headers, static_audio_headers

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")

pytestmark = pytest.mark.unit

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(["", "8000", "16kHz", "audio/x-mulaw;rate=8000", "outbound", "AAAA", "1.5"]),
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=8,
)
KEYS = [
    "event", "sequence_number", "sequenceNumber", "stream_sid", "streamSid", "start", "media",
    "stop", "dtmf", "mark", "call_sid", "callSid", "leg_sid", "custom_parameters",
    "customParameters", "media_format", "mediaFormat", "encoding", "sample_rate", "payload",
    "chunk", "timestamp", "track", "digit", "name", "reason",
]  # fmt: skip


def _fields(depth: int) -> Any:
    value = JSON if depth == 0 else st.one_of(JSON, st.deferred(lambda: _fields(depth - 1)))
    return st.dictionaries(st.sampled_from(KEYS), value, max_size=6)


MESSAGES = st.builds(
    lambda event, fields: {**fields, "event": event},
    st.sampled_from(["start", "media", "stop", "dtmf", "mark", "clear", "connected", "Media", "x"]),
    _fields(2),
)
GOOD_START = orjson.dumps({"event": "start", "start": {"call_sid": "CA1"}}).decode()
GOOD_MEDIA = orjson.dumps(
    {"event": "media", "media": {"payload": base64.b64encode(bytes(320)).decode()}}
).decode()


@hypothesis.settings(max_examples=120, deadline=None, database=None)
@hypothesis.given(st.lists(MESSAGES, max_size=6), st.booleans())
def test_any_message_sequence_is_a_record_a_dead_letter_or_a_close(
    messages: list[dict[str, Any]], started: bool
) -> None:
    session = StreamSession(IngestStats(), "stream", {}, max_bad_frames=3)
    if started:
        session.on_message(GOOD_START, 0.0)
    try:
        for message in messages:
            session.on_message(json.dumps(message), 0.0)  # orjson refuses > 64-bit ints
        session.on_message(GOOD_MEDIA, 0.0)
    except ProtocolError as exc:
        assert exc.reason and exc.close_code in (1003, 1007, 1008, 1009)
    session.end(1.0)
    for out in session.outbox:
        if out.topic_kind == AUDIO:
            tag = out.call
            assert tag is not None and len(out.value) % 2 == 0
            static = static_audio_headers(tag.call_sid, tag.stream_sid, tag.tenant, tag.campaign)
            rate = ("as-sample_rate_hz", str(tag.sample_rate_hz).encode())
            audio_headers(static, out.seq, out.chunk, out.media_timestamp_ms, rate, 0, 0)
        else:
            assert len(out.value) < 200_000
            orjson.loads(out.value)
