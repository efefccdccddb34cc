"""Exotel AgentStream WebSocket events, parsed once at the edge into typed, frozen models.

Strict records, tolerant connections (``docs/ingest.md`` lists every variant and its source):
numbers arrive as JSON numbers or strings, ids in snake_case or camelCase, ``sample_rate`` as
``8000``, ``"8000Hz"``, ``"8k"`` or ``""``, ``custom_parameters`` as an object, a string or
null, ``media_format`` may be null, timestamps fractional or empty. A field that cannot be read
becomes ``None`` (the caller picks the default); only what cannot be bounded is an error:

* an integer outside the signed 64-bit range, or an id/string field over its length limit:
  :class:`ProtocolError` (1007) whatever the event, so nothing unbounded reaches a record;
* a ``start`` without any usable field is the session's call (it knows the URL fallbacks);
* any other event that cannot be read at all (no ``media`` object, bad JSON, ...):
  :class:`BadFrameError`: dead-lettered, and the call goes on.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

import orjson
from pybase64 import b64decode as fast_b64decode
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)

from schemas.errors import ProtocolError
from schemas.exotel_fields import (
    DEFAULT_SAMPLE_RATE_HZ as DEFAULT_SAMPLE_RATE_HZ,
)
from schemas.exotel_fields import (
    FATAL_ERRORS,
    OptId,
    OptInt,
    OptText,
    bounded,
    read_custom_parameters,
)
from schemas.exotel_fields import MAX_ID_CHARS as MAX_ID_CHARS
from schemas.exotel_fields import MAX_NESTING_DEPTH as MAX_NESTING_DEPTH
from schemas.exotel_fields import MAX_TEXT_CHARS as MAX_TEXT_CHARS
from schemas.exotel_fields import SUPPORTED_SAMPLE_RATES_HZ as SUPPORTED_SAMPLE_RATES_HZ
from schemas.exotel_fields import BadFrameError as BadFrameError
from schemas.exotel_fields import Codec as Codec
from schemas.exotel_fields import classify_encoding as classify_encoding
from schemas.exotel_fields import parse_rate as parse_rate

# --- events ---------------------------------------------------------------------------------

_STREAM_SID = AliasChoices(
    "stream_sid", "streamSid", "streamSID", "StreamSid", "StreamSID", "streamId", "stream_id"
)
_ACCOUNT_SID = AliasChoices("account_sid", "accountSid", "AccountSid")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


def _object_or_none(value: Any) -> Any:
    if isinstance(value, str):  # a bare encoding string
        return {"encoding": value}
    return value if isinstance(value, dict) else None


class MediaFormat(_Frozen):
    """What ``start.media_format`` says; unreadable parts are None (the session decides)."""

    encoding: OptText = None
    sample_rate: Any = Field(None, validation_alias=AliasChoices("sample_rate", "sampleRate"))
    bit_rate: OptText = Field(None, validation_alias=AliasChoices("bit_rate", "bitRate"))

    @property
    def sample_rate_hz(self) -> int | None:
        """The rate from the encoding's ``;rate=``, else ``sample_rate``; None: unreadable."""
        _, from_encoding = classify_encoding(self.encoding)
        return from_encoding or parse_rate(self.sample_rate)

    @property
    def codec(self) -> Codec:
        return classify_encoding(self.encoding)[0]


class StartInfo(_Frozen):
    stream_sid: OptId = Field(None, validation_alias=_STREAM_SID)
    call_sid: OptId = None
    callSid: OptId = Field(None, validation_alias=AliasChoices("callSid", "CallSid", "callSID"))  # noqa: N815
    leg_sid: OptId = Field(None, validation_alias=AliasChoices("leg_sid", "legSid"))
    account_sid: OptId = Field(None, validation_alias=_ACCOUNT_SID)
    from_number: OptText = Field(None, validation_alias=AliasChoices("from", "From"))
    to_number: OptText = Field(None, validation_alias=AliasChoices("to", "To"))
    custom_parameters: Annotated[dict[str, str], BeforeValidator(read_custom_parameters)] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("custom_parameters", "customParameters"),
    )
    media_format: Annotated[MediaFormat | None, BeforeValidator(_object_or_none)] = Field(
        None, validation_alias=AliasChoices("media_format", "mediaFormat")
    )


class _Event(_Frozen):
    sequence_number: OptInt = Field(
        None, validation_alias=AliasChoices("sequence_number", "sequenceNumber")
    )
    stream_sid: OptId = Field(None, validation_alias=_STREAM_SID)


class ConnectedEvent(_Frozen):
    event: Literal["connected"]


def _dict_or_empty(value: Any) -> Any:
    return value if isinstance(value, dict) else {}


class StartEvent(_Event):
    event: Literal["start"]
    start: Annotated[StartInfo, BeforeValidator(_dict_or_empty)] = Field(default_factory=StartInfo)
    call_sid: OptId = Field(None, validation_alias=AliasChoices("call_sid", "callSid"))

    @property
    def effective_stream_sid(self) -> str:
        return self.stream_sid or self.start.stream_sid or ""

    def call_identity(self, url_call_sid: str | None = None) -> tuple[str, str] | None:
        """``(call SID, where it came from)``, first of: ``call_sid``, ``callSid``,
        ``leg_sid``, the URL's ``CallSid`` parameter, the stream SID; None if none is there."""
        info = self.start
        for value, source in (
            (info.call_sid, "call_sid"),
            (info.callSid, "callSid"),
            (self.call_sid, "call_sid"),
            (info.leg_sid, "leg_sid"),
            (url_call_sid, "url_CallSid"),
            (self.effective_stream_sid, "stream_sid"),
        ):
            if value and value.strip():
                return value.strip(), source
        return None


class MediaInfo(_Frozen):
    chunk: OptInt = None
    timestamp_ms: OptInt = Field(None, validation_alias=AliasChoices("timestamp", "timestamp_ms"))
    payload: str
    track: OptText = None

    def audio(self) -> bytes:
        """The base64 payload as bytes; whitespace and missing padding are repaired."""
        try:
            return fast_b64decode(self.payload, validate=True)
        except (binascii.Error, ValueError):
            return _repair_base64(self.payload)

    def pcm16(self) -> bytes:
        """The payload as PCM16 LE bytes (even length); BadFrameError if it is not."""
        try:
            # the fast path: SIMD, 0.8 us for 100 ms of 8 kHz PCM16 (binascii: 4.9 us)
            pcm = fast_b64decode(self.payload, validate=True)
        except (binascii.Error, ValueError):
            pcm = _repair_base64(self.payload)
        if len(pcm) % 2:
            raise BadFrameError(f"media payload has odd length {len(pcm)}: not PCM16")
        return pcm


def _repair_base64(payload: str) -> bytes:
    text = "".join(payload.split())
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text = text.rstrip("=")
    if len(text) % 4 == 1:
        raise BadFrameError("media payload is not valid base64: truncated")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadFrameError(f"media payload is not valid base64: {exc}") from exc


class DtmfInfo(_Frozen):
    digit: Annotated[str, bounded(16)]
    duration_ms: OptInt = Field(None, validation_alias=AliasChoices("duration", "duration_ms"))


class MarkInfo(_Frozen):
    name: Annotated[str, bounded(MAX_TEXT_CHARS)]


class StopInfo(_Frozen):
    call_sid: OptId = Field(None, validation_alias=AliasChoices("call_sid", "callSid", "CallSid"))
    account_sid: OptId = Field(None, validation_alias=_ACCOUNT_SID)
    reason: OptText = None


class MediaEvent(_Event):
    event: Literal["media"]
    media: MediaInfo


class DtmfEvent(_Event):
    event: Literal["dtmf"]
    dtmf: DtmfInfo


class MarkEvent(_Event):
    event: Literal["mark"]
    mark: MarkInfo


class StopEvent(_Event):
    event: Literal["stop"]
    stop: Annotated[StopInfo, BeforeValidator(_dict_or_empty)] = Field(default_factory=StopInfo)


class ClearEvent(_Event):
    """``clear`` from Exotel: drop queued bot audio (relayed to the upstream bot)."""

    event: Literal["clear"]


ExotelEvent = Annotated[
    ConnectedEvent | StartEvent | MediaEvent | DtmfEvent | MarkEvent | StopEvent | ClearEvent,
    Field(discriminator="event"),
]
KNOWN_EVENTS = frozenset({"connected", "start", "media", "dtmf", "mark", "stop", "clear"})
_ADAPTER: TypeAdapter[ExotelEvent] = TypeAdapter(ExotelEvent)


class UnknownEvent(_Frozen):
    """An event type this version does not know; callers log, count and skip it."""

    event: str


def _shallow(data: dict[str, Any]) -> bool:
    """No value nests below a second object (depth <= 3, a media frame's shape): a third of
    :func:`_depth`'s cost on every frame."""
    for value in data.values():
        kind = type(value)
        if kind is dict:
            for inner in value.values():
                if type(inner) is dict or type(inner) is list:
                    return False
        elif kind is list:
            return False
    return True


def _depth(value: Any, limit: int) -> int:
    """Nesting depth (a scalar inside the top object is level 2), stopping past ``limit``.

    Only containers are pushed, scalars just count as a level.
    """
    if not isinstance(value, dict | list):
        return 1
    deepest = 1
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if not node:
            continue
        child_level = level + 1
        if child_level > deepest:
            deepest = child_level
            if deepest > limit:
                return deepest
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, child_level))
    return deepest


def _error(event: str, exc: ValidationError) -> ProtocolError:
    errors = exc.errors()
    fatal = [e for e in errors if e["type"] in FATAL_ERRORS]
    first = (fatal or errors)[0]
    where = ".".join(str(part) for part in first["loc"][1:] or first["loc"])
    text = f"bad '{event}' event: {where}: {first['msg']}"
    if fatal or event == "start":
        return ProtocolError(text)
    return BadFrameError(text)


def text_in_binary(raw: bytes) -> str:
    """A JSON object sent in a binary frame, as text; any other binary frame is 1003."""
    if raw[:1] == b"{":
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    raise ProtocolError("binary frames are not part of the protocol", close_code=1003)


def parse_event(raw: str | bytes) -> ExotelEvent | UnknownEvent:
    """Parse one WebSocket text message from Exotel.

    Raises :class:`BadFrameError` for a message that cannot be read (bad JSON, no usable
    ``media``), :class:`ProtocolError` (1007) for an unbounded value or an unreadable
    ``start``, and 1008 for absurd nesting. Unknown ``event`` values come back as
    :class:`UnknownEvent`.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadFrameError(f"message is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadFrameError("message is not a JSON object")
    if not _shallow(data) and _depth(data, MAX_NESTING_DEPTH) > MAX_NESTING_DEPTH:
        raise ProtocolError(
            f"message nests deeper than {MAX_NESTING_DEPTH} levels", close_code=1008
        )
    event = data.get("event")
    if not isinstance(event, str):
        raise BadFrameError("message has no string 'event' field")
    if event not in KNOWN_EVENTS:
        lowered = event.strip().lower()
        if lowered not in KNOWN_EVENTS:
            return UnknownEvent(event=event[:MAX_TEXT_CHARS])
        data["event"] = event = lowered  # "Media", " start ": the spelling varies, not the event
    if event == "start" and not isinstance(data.get("start"), dict):
        data["start"] = {k: v for k, v in data.items() if k != "start"}  # a flat start
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise _error(event, exc) from exc


# --- messages we send (Voicebot only) -------------------------------------------------------

MIN_OUTBOUND_BYTES = 3200  # Exotel: at least 3.2 KB (100 ms at 16 kHz, 200 ms at 8 kHz)
MAX_OUTBOUND_BYTES = 100 * 1024  # at most 100 KB
OUTBOUND_QUANTUM = 320  # and a multiple of 320 bytes


def media_message(stream_sid: str, pcm16: bytes) -> bytes:
    """A ``media`` message carrying PCM16 LE audio back to the caller (pipecat's and
    bolna's spelling: ``stream_sid``). The chunk must already fit Exotel's bounds."""
    size = len(pcm16)
    if size % OUTBOUND_QUANTUM or not MIN_OUTBOUND_BYTES <= size <= MAX_OUTBOUND_BYTES:
        raise ValueError(
            f"outbound audio chunks must be a multiple of {OUTBOUND_QUANTUM} bytes between "
            f"{MIN_OUTBOUND_BYTES} and {MAX_OUTBOUND_BYTES}; got {size}"
        )
    payload = base64.b64encode(pcm16).decode("ascii")
    return orjson.dumps({"event": "media", "stream_sid": stream_sid, "media": {"payload": payload}})


def media_messages(stream_sid: str, pcm16: bytes, chunk_bytes: int = 3200) -> list[bytes]:
    """Any amount of PCM16 as ``media`` messages within Exotel's bounds; the last chunk is
    padded with silence up to a multiple of 320 bytes and at least 3.2 KB."""
    step = min(max(chunk_bytes, MIN_OUTBOUND_BYTES), MAX_OUTBOUND_BYTES)
    step -= step % OUTBOUND_QUANTUM
    out: list[bytes] = []
    for start in range(0, len(pcm16), step):
        piece = pcm16[start : start + step]
        size = max(MIN_OUTBOUND_BYTES, -(-len(piece) // OUTBOUND_QUANTUM) * OUTBOUND_QUANTUM)
        out.append(media_message(stream_sid, piece.ljust(size, b"\x00")))
    return out


def mark_message(stream_sid: str, name: str) -> bytes:
    return orjson.dumps({"event": "mark", "stream_sid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> bytes:
    return orjson.dumps({"event": "clear", "stream_sid": stream_sid})
