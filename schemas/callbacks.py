"""Exotel HTTP callbacks: Passthru, Connect (dynamic URL) and StatusCallback parameters,
and the Connect applet's JSON answer.

Parameters arrive as a GET query, a POST form or a POST JSON body. The AgentStream block comes
either as ``Stream[StreamSID]=...`` fields or as one ``Stream={"StreamSID": ...}`` JSON string;
``digits`` arrives wrapped in double quotes. Only some parameters come, depending on where the
applet sits, so every field is optional except what a handler decides it needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from schemas.errors import ProtocolError

MAX_PARAMS = 200
MAX_VALUE_CHARS = 8192


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


def _to_int(value: str | None) -> int | None:
    if value is None:
        return None
    text = _unquote(value)
    try:
        return int(float(text)) if text else None
    except ValueError:
        return None


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

    return CallbackParams(
        call_sid=pick("CallSid", "call_sid", "callSid"),
        call_from=pick("CallFrom", "From"),
        call_to=pick("CallTo", "To"),
        direction=pick("Direction"),
        call_type=pick("CallType"),
        status=pick("Status"),
        digits=pick("digits", "Digits"),
        custom_field=pick("CustomField"),
        flow_id=pick("flow_id"),
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
    max_parallel_attempts: int = 1


class StartCallPlayback(BaseModel):
    model_config = ConfigDict(frozen=True)

    playback_to: str = "callee"
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
    music_on_hold: dict[str, str] | None = None
    start_call_playback: StartCallPlayback | None = None
    parallel_ringing: ParallelRinging | None = None
    custom_params: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))
