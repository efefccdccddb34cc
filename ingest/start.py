"""What a ``start`` event means for one call, with every fallback: :func:`read_start`.

Pure (no I/O, no state): the session calls it once per stream and keeps the result.

* call SID: ``call_sid``, ``callSid``, ``leg_sid``, the WebSocket URL's ``CallSid``, the
  stream SID (the one used is recorded);
* tenant / campaign: custom parameters, then the URL's query, then ``default``;
* codec: from ``media_format.encoding`` (PCM16 spellings, μ-law, A-law; unknown -> PCM16);
* sample rate: the encoding's ``;rate=``, ``media_format.sample_rate``, the URL's
  ``?sample-rate``, 8000. When media_format and the URL disagree, :func:`choose_rate` decides
  from the first frame's size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ingest.codecs import decoder_for
from schemas.errors import ProtocolError
from schemas.exotel import (
    DEFAULT_SAMPLE_RATE_HZ,
    MAX_ID_CHARS,
    Codec,
    StartEvent,
    classify_encoding,
    parse_rate,
)

DEFAULT_LABEL = "default"
URL_CALL_SID_PARAMS = ("CallSid", "callSid", "call_sid")


@dataclass(frozen=True)
class CallSetup:
    """The readable facts of one ``start`` (see the module docstring for the fallbacks)."""

    call_sid: str
    call_sid_source: str
    stream_sid: str
    tenant: str
    campaign: str
    custom_parameters: dict[str, str]
    encoding: str | None
    codec: Codec
    decode: Callable[[bytes], bytes] | None  # None: PCM16 kept as it is
    sample_rate_hz: int
    rate_choice: tuple[int, int] | None  # (media_format, URL) when they disagree


def read_start(event: StartEvent, query: Mapping[str, str]) -> CallSetup:
    """Raises ProtocolError (1007) only when nothing identifies the call or a label is huge."""
    info = event.start
    url_sid = next((query[k] for k in URL_CALL_SID_PARAMS if query.get(k)), None)
    if url_sid is not None and len(url_sid) > MAX_ID_CHARS:
        url_sid = None
    identity = event.call_identity(url_sid)
    if identity is None:
        raise ProtocolError(
            "unusable 'start': no call_sid, callSid, leg_sid, CallSid URL parameter or stream SID"
        )
    custom = dict(info.custom_parameters)
    fmt = info.media_format
    encoding = fmt.encoding if fmt is not None else None
    codec, _ = classify_encoding(encoding)
    format_rate = fmt.sample_rate_hz if fmt is not None else None
    query_rate = query.get("sample-rate") or query.get("sample_rate")
    url_rate = parse_rate(query_rate) if query_rate is not None else None
    disagree = bool(format_rate and url_rate and format_rate != url_rate)
    return CallSetup(
        call_sid=identity[0],
        call_sid_source=identity[1],
        stream_sid=event.effective_stream_sid,
        tenant=_label("tenant", custom, query),
        campaign=_label("campaign", custom, query),
        custom_parameters=custom,
        encoding=encoding,
        codec=codec,
        decode=decoder_for(codec),
        sample_rate_hz=format_rate or url_rate or DEFAULT_SAMPLE_RATE_HZ,
        rate_choice=(format_rate, url_rate) if disagree and format_rate and url_rate else None,
    )


def _label(name: str, custom: Mapping[str, str], query: Mapping[str, str]) -> str:
    value = custom.get(name) or query.get(name) or DEFAULT_LABEL
    if len(value) > MAX_ID_CHARS:
        raise ProtocolError(f"unusable 'start': {name} longer than {MAX_ID_CHARS} characters")
    return value


def choose_rate(frame_bytes: int, format_rate: int, url_rate: int) -> int:
    """The rate whose 100 ms PCM16 frame (rate / 5 bytes: 1,600 B at 8 kHz, 3,200 B at
    16 kHz) is nearest to ``frame_bytes``; a tie keeps media_format's."""

    def distance(rate: int) -> float:
        return abs(math.log(max(frame_bytes, 1) / (rate // 5)))

    return min((format_rate, url_rate), key=distance)
