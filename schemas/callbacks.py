"""Exotel HTTP callbacks: Passthru, Connect (dynamic URL) and StatusCallback parameters,
and the Connect applet's JSON answer.

Parameters arrive as a GET query, a POST form or a POST JSON body. The AgentStream block comes
either as ``Stream[StreamSID]=...`` fields or as one ``Stream={"StreamSID": ...}`` JSON string;
``digits`` arrives wrapped in double quotes. Only some parameters come, depending on where the
applet sits, so every field is optional except what a handler decides it needs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from schemas.errors import ProtocolError

MAX_PARAMS = 200
MAX_VALUE_CHARS = 8192
MAX_DIGITS = 64  # digits kept from one callback (a Gather applet collects a few)
MAX_INT = 10**12  # larger numbers (and inf, nan) read as absent


class StreamInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    stream_sid: str | None = None
    status: str | None = None
    duration_s: int | None = None
    disconnected_by: str | None = None
    recording_url: str | None = None
    stream_url: str | None = None
    detailed_status: str | None = None
    error: str | None = None


class CallbackParams(BaseModel):
    """Typed view of any Exotel callback's parameters; ``raw`` keeps every one verbatim."""

    model_config = ConfigDict(frozen=True)

    call_sid: str | None = None
    call_from: str | None = None
    call_to: str | None = None
    direction: str | None = None
    call_type: str | None = None
    status: str | None = None
    digits: str | None = None
    custom_field: str | None = None
    flow_id: str | None = None
    account_sid: str | None = None
    event_type: str | None = Field(
        None, description="e.g. 'stream-start' (the newer POST-JSON Passthru, before the stream)"
    )
    dial_call_duration_s: int | None = None
    stream: StreamInfo = Field(default_factory=StreamInfo)
    raw: dict[str, str] = Field(default_factory=dict)


_STREAM_KEYS = {
    "streamsid": "stream_sid",
    "status": "status",
    "duration": "duration_s",
    "disconnectedby": "disconnected_by",
    "recordingurl": "recording_url",
    "streamurl": "stream_url",
    "detailedstatus": "detailed_status",
    "error": "error",
}


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


# Flat spellings of stream fields (the POST-JSON Passthru: {"StreamSid": ..., "StreamUrl": ...}).
_FLAT_STREAM_KEYS = {
    "StreamSid": "stream_sid",
    "StreamSID": "stream_sid",
    "streamSid": "stream_sid",
    "stream_sid": "stream_sid",
    "StreamUrl": "stream_url",
    "StreamURL": "stream_url",
    "streamUrl": "stream_url",
    "stream_url": "stream_url",
}


def _to_int(value: str | None) -> int | None:
    """A whole number from text such as "12", "12.0" or '"12"'; None if absent or unreadable."""
    if value is None:
        return None
    text = _unquote(value)
    if not text or len(text) > 64:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or abs(number) > MAX_INT:
        return None
    return int(number)


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return orjson.dumps(value).decode()


def flatten(items: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """Turn query/form pairs or a JSON object's items into ``{name: text}``; first value wins."""
    out: dict[str, str] = {}
    for count, (key, value) in enumerate(items):
        if count >= MAX_PARAMS:
            raise ProtocolError(f"more than {MAX_PARAMS} parameters")
        text = _stringify(value)
        if len(text) > MAX_VALUE_CHARS:
            raise ProtocolError(f"parameter {key!r} longer than {MAX_VALUE_CHARS} characters")
        out.setdefault(str(key), text)
    return out


def parse_json_body(body: bytes) -> dict[str, str]:
    """Parameters from a JSON body (POST with ``Content-Type: application/json``)."""
    try:
        data = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError("JSON body must be an object")
    return flatten(data.items())


def _stream_block(raw: Mapping[str, str]) -> StreamInfo:
    fields: dict[str, Any] = {}
    blob = raw.get("Stream")
    if blob:
        try:
            data = orjson.loads(blob)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(f"Stream parameter is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ProtocolError("Stream parameter must be a JSON object")
        for key, value in data.items():
            name = _STREAM_KEYS.get(str(key).lower())
            if name:
                fields[name] = _stringify(value)
    for key, value in raw.items():
        if key.startswith("Stream[") and key.endswith("]"):
            name = _STREAM_KEYS.get(key[7:-1].lower())
            if name:
                fields.setdefault(name, value)
        elif key in _FLAT_STREAM_KEYS and value:
            fields.setdefault(_FLAT_STREAM_KEYS[key], _unquote(value))
    if "duration_s" in fields:
        fields["duration_s"] = _to_int(fields["duration_s"])
    return StreamInfo.model_validate(fields)


def parse_callback(raw: Mapping[str, str]) -> CallbackParams:
    """Parse flattened callback parameters; tolerant of missing ones, strict on malformed ones."""

    def pick(*names: str) -> str | None:
        for name in names:
            value = raw.get(name)
            if value is not None and value != "":
                return _unquote(value)
        return None

    digits = pick("digits", "Digits")
    return CallbackParams(
        call_sid=pick("CallSid", "call_sid", "callSid", "CallSID"),
        call_from=pick("CallFrom", "From"),
        call_to=pick("CallTo", "To"),
        direction=pick("Direction"),
        call_type=pick("CallType"),
        status=pick("Status"),
        digits=None if digits is None else digits[:MAX_DIGITS],
        custom_field=pick("CustomField"),
        flow_id=pick("flow_id"),
        account_sid=pick("AccountSid", "account_sid", "accountSid"),
        event_type=pick("EventType", "event_type", "eventType"),
        dial_call_duration_s=_to_int(pick("DialCallDuration")),
        stream=_stream_block(raw),
        raw=dict(raw),
    )


# --- Connect applet answer --------------------------------------------------------------------


class ConnectDestination(BaseModel):
    model_config = ConfigDict(frozen=True)

    numbers: list[str] | None = None
    trunk: str | None = None


class ParallelRinging(BaseModel):
    model_config = ConfigDict(frozen=True)

    activate: bool = False
    max_parallel_attempts: int = Field(1, ge=1, le=5)


class StartCallPlayback(BaseModel):
    model_config = ConfigDict(frozen=True)

    playback_to: Literal["callee", "both"] = "callee"
    type: str = "text"
    value: str


class ConnectAnswer(BaseModel):
    """The JSON the Connect applet's dynamic URL must answer."""

    model_config = ConfigDict(frozen=True)

    fetch_after_attempt: bool = False
    destination: ConnectDestination
    outgoing_phone_number: str | None = None
    record: bool = True
    recording_channels: str = "dual"
    max_ringing_duration: int = 45
    max_conversation_duration: int = 3600
    music_on_hold: dict[str, Literal["operator_tone", "default_tone"]] | None = None
    start_call_playback: StartCallPlayback | None = None
    parallel_ringing: ParallelRinging | None = None
    custom_params: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))
