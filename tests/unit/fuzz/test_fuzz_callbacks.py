"""Property-based fuzzing of the callback parser (schemas.callbacks): whatever Exotel (or
anyone) sends, parsing ends in typed parameters or a ProtocolError, never another exception."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import parse_qsl

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.callbacks import (
    MAX_DIGITS,
    MAX_PARAMS,
    MAX_VALUE_CHARS,
    CallbackParams,
    flatten,
    parse_callback,
    parse_json_body,
)
from schemas.errors import ProtocolError

pytestmark = pytest.mark.unit

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure reproduces, nothing flakes
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

KNOWN_KEYS = [
    "CallSid",
    "call_sid",
    "callSid",
    "CallFrom",
    "CallTo",
    "From",
    "To",
    "Direction",
    "DialCallDuration",
    "digits",
    "Digits",
    "Status",
    "CustomField",
    "flow_id",
    "AccountSid",
    "EventType",
    "StreamSid",
    "StreamUrl",
    "Stream",
    "Stream[StreamSID]",
    "Stream[Status]",
    "Stream[Duration]",
    "Stream[DisconnectedBy]",
    "Stream[RecordingUrl]",
    "Stream[Error]",
]
NUMBERISH = st.sampled_from(
    ["0", "12", '"12"', "12.5", "-3", "inf", "-inf", "nan", "1e999", "1e308", "9" * 40, "", " "]
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=20))
values = st.one_of(NUMBERISH, st.text(max_size=60), st.text(max_size=2).map(lambda s: f'"{s}"'))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8)), inner, max_size=4
        )
    ),
    max_leaves=20,
)


def check(params: CallbackParams) -> None:
    assert params.digits is None or len(params.digits) <= MAX_DIGITS
    for number in (params.dial_call_duration_s, params.stream.duration_s):
        assert number is None or (isinstance(number, int) and abs(number) <= 10**12)
    orjson.dumps(params.model_dump())  # what is recorded on agentstream.calls serialises


def parse_or_refuse(raw: dict[str, str]) -> None:
    try:
        params = parse_callback(raw)
    except ProtocolError:
        return
    check(params)


@FUZZ
@given(st.lists(st.tuples(keys, values), max_size=30))
def test_any_parameters_parse_or_are_refused(items: list[tuple[str, str]]) -> None:
    parse_or_refuse(flatten(items))


@FUZZ
@given(st.lists(st.tuples(st.text(max_size=5), st.text(max_size=5)), max_size=MAX_PARAMS + 20))
def test_flatten_bounds_count_and_size(items: list[tuple[str, str]]) -> None:
    try:
        out = flatten(items)
    except ProtocolError:
        assert len(items) > MAX_PARAMS
        return
    assert len(out) <= MAX_PARAMS and all(len(v) <= MAX_VALUE_CHARS for v in out.values())


@FUZZ
@given(st.binary(max_size=300))
def test_any_body_bytes(body: bytes) -> None:
    try:
        raw = parse_json_body(body)
    except ProtocolError:
        return
    parse_or_refuse(raw)


@settings(FUZZ, max_examples=60)  # nested values are slow to generate
@given(st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=10), json_values, max_size=8))
def test_any_json_object(data: dict[str, Any]) -> None:
    try:
        raw = parse_json_body(json.dumps(data).encode())
    except ProtocolError:
        return
    parse_or_refuse(raw)


@FUZZ
@given(st.text(max_size=300))
def test_any_query_string(query: str) -> None:
    parse_or_refuse(flatten(parse_qsl(query, keep_blank_values=True)))


@FUZZ
@given(json_values)
def test_any_stream_parameter(value: Any) -> None:
    blob = value if isinstance(value, str) else json.dumps(value)  # big ints too
    parse_or_refuse({"CallSid": "CA", "Stream": blob})


@FUZZ
@given(
    st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=20),
    st.sampled_from(["completed", "failed", "cancelled"]),
    st.integers(min_value=0, max_value=10**6),
)
def test_stream_block_json_and_brackets_agree(sid: str, status: str, seconds: int) -> None:
    as_json = parse_callback(
        {"Stream": orjson.dumps({"StreamSID": sid, "Status": status, "Duration": seconds}).decode()}
    )
    brackets = parse_callback(
        {"Stream[StreamSID]": sid, "Stream[Status]": status, "Stream[Duration]": str(seconds)}
    )
    assert as_json.stream == brackets.stream
    assert as_json.stream.duration_s == seconds


@FUZZ
@given(st.floats())
def test_any_float_duration(value: float) -> None:
    params = parse_callback({"DialCallDuration": repr(value)})
    if math.isfinite(value) and abs(value) <= 10**12:
        assert params.dial_call_duration_s == int(value)
    else:
        assert params.dial_call_duration_s is None
