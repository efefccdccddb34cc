"""Exotel message shapes collected from public sources, one :class:`Case` each.

Each case is a whole stream as one source shows it (``connected``, ``start``, ``media``...,
``stop``), with where it was seen. The shapes were collected 2026-12 from: Exotel's docs
(developer.exotel.com ``agentstream/websocket-protocol``, ``stream-voicebot-applet`` and the
beta ``stream-voicebot-extension`` page), exotel/Agent-Stream (its protocol notes), pipecat
(``serializers/exotel.py`` and its tests), bolna's Exotel handlers, exkrishan/rtaafin
(``services/ingest``'s Exotel types and setup guide), dograh's Exotel provider (commits by
Exotel engineers, incl. a live ``start`` capture), and logged Exotel requests quoted in public
code; ``shared/docs/exotel-agentstream.md`` section 9 keeps the list. Payload bytes are
synthetic; field names, nesting and value spellings are the sources'.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.integration.ingest.conformance.g711_reference import decode_mulaw


@dataclass
class Case:
    name: str
    source: str
    messages: list[str]
    frames: list[bytes]  # PCM16 expected in agentstream.audio, in order
    call_sid: str
    query: dict[str, str] = field(default_factory=dict)
    rate: int = 8000
    tracks: list[str] = field(default_factory=list)  # per frame; empty: all inbound
    tenant: str = "default"
    call_sid_source: str = "call_sid"
    encoding: str | None = None


def _msg(data: dict[str, Any]) -> str:
    return orjson.dumps(data).decode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _audio(n: int, seed: int) -> bytes:
    return bytes((seed * 31 + i * 7) % 256 for i in range(n))


def _media(sid: str, seq: int, data: bytes, **extra: Any) -> str:
    media = {"chunk": seq - 1, "timestamp": str((seq - 2) * 100), "payload": _b64(data), **extra}
    return _msg({"event": "media", "sequence_number": str(seq), "stream_sid": sid, "media": media})


def _stop(sid: str, call_sid: str, seq: int) -> str:
    stop = {"call_sid": call_sid, "account_sid": "exotel1", "reason": "callended"}
    return _msg({"event": "stop", "sequence_number": str(seq), "stream_sid": sid, "stop": stop})


def _snake_start(sid: str, call_sid: str, media_format: Any, custom: Any = None) -> str:
    start: dict[str, Any] = {
        "stream_sid": sid,
        "call_sid": call_sid,
        "account_sid": "exotel1",
        "from": "09901320691",
        "to": "08069891522",
        "custom_parameters": custom if custom is not None else {"tenant": "acme"},
        "media_format": media_format,
    }
    return _msg({"event": "start", "sequence_number": "1", "stream_sid": sid, "start": start})


def _pcm_case(
    name: str, source: str, media_format: Any, frame_bytes: int = 1600, **kwargs: Any
) -> Case:
    sid, call = f"MZ-{name}", f"CA-{name}"
    frames = [_audio(frame_bytes, i) for i in range(3)]
    messages = [_msg({"event": "connected"}), _snake_start(sid, call, media_format)]
    messages += [_media(sid, i + 2, f) for i, f in enumerate(frames)]
    messages.append(_stop(sid, call, 5))
    encoding = media_format.get("encoding") if isinstance(media_format, dict) else None
    return Case(name, source, messages, frames, call, tenant="acme", encoding=encoding, **kwargs)


DOCS = "developer.exotel.com/docs/agentstream/websocket-protocol (sample start event)"
BETA = "developer.exotel.com stream-voicebot-extension (beta page: L16 and mu-law, track=both)"


def _cases() -> list[Case]:
    cases = [
        _pcm_case(
            "docs-raw",
            DOCS,
            {"encoding": "raw", "sample_rate": "8000", "bit_rate": "128kbps"},
        ),
        _pcm_case(
            "docs-x-raw",
            "exotel/Agent-Stream README sample; exotel/voice-streaming",
            {"encoding": "audio/x-raw", "sample_rate": 8000, "bit_rate": "16"},
        ),
        _pcm_case(
            "pcm16",
            "exkrishan/rtaafin services/ingest/EXOTEL_STREAM_APPLET_SETUP.md",
            {"encoding": "pcm16", "sample_rate": 8000},
        ),
        _pcm_case(
            "audio-pcm",
            "shared/docs/exotel-agentstream.md section 9 (encoding list)",
            {"encoding": "audio/pcm", "sample_rate": "8000"},
        ),
        _pcm_case(
            "x-l16",
            "shared/docs/exotel-agentstream.md section 9 (encoding list)",
            {"encoding": "audio/x-l16", "sample_rate": "8000"},
        ),
        _pcm_case(
            "slin",
            "issue 17 item 1 (PCM16 spellings: slin); Asterisk-style naming in bridges",
            {"encoding": "slin", "sample_rate": 8000},
        ),
        _pcm_case(
            "l16-16k",
            BETA,
            {"encoding": "audio/L16;rate=16000", "sample_rate": 16000},
            frame_bytes=3200,
            rate=16000,
        ),
        _pcm_case(
            "rate-16khz-text",
            "test clients in section 9 ('16kHz'); rtaafin types sample_rate as a string",
            {"encoding": "raw", "sample_rate": "16kHz", "bit_rate": "16"},
            frame_bytes=3200,
            rate=16000,
        ),
    ]
    cases += [_live_capture(), _camel_case(), _string_custom(), _nulls(), _mulaw(), _tracks()]
    cases += [_bridge_strings(), _disagreement(), _base64_variants(), _url_call_sid()]
    return cases


def _live_capture() -> Case:
    """encoding 'base64', no call_sid but leg_sid, key-only custom parameters."""
    sid = "MZ-live"
    start = {
        "stream_sid": sid,
        "leg_sid": "LEG-live",
        "account_sid": "exotel1",
        "from": "+91XXXXXXXXXX",
        "to": "+91YYYYYYYYYY",
        "custom_parameters": {"resume_id": ""},
        "media_format": {"encoding": "base64", "sample_rate": 8000, "bit_rate": "128kbps"},
    }
    frames = [_audio(1600, i) for i in range(3)]
    messages = [_msg({"event": "start", "stream_sid": sid, "sequence_number": "1", "start": start})]
    messages += [_media(sid, i + 2, f) for i, f in enumerate(frames)]
    messages.append(_msg({"event": "stop", "stream_sid": sid, "stop": {"reason": "callended"}}))
    return Case(
        "live-leg-sid",
        "a live start capture quoted in public code (section 9: leg_sid, 'base64')",
        messages,
        frames,
        "LEG-live",
        call_sid_source="leg_sid",
        encoding="base64",
    )


def _camel_case() -> Case:
    sid, call = "MZ-camel", "CA-camel"
    start = {
        "streamSid": sid,
        "callSid": call,
        "accountSid": "exotel1",
        "customParameters": {"tenant": "acme"},
        "mediaFormat": {"encoding": "audio/x-raw", "sampleRate": "8000"},
    }
    frames = [_audio(1600, i) for i in range(2)]
    messages = [_msg({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": start})]
    for i, frame in enumerate(frames):
        media = {"chunk": str(i + 1), "timestamp": str(i * 100), "payload": _b64(frame)}
        messages.append(
            _msg({"event": "media", "sequenceNumber": str(i + 2), "streamSid": sid, "media": media})
        )
    messages.append(_msg({"event": "stop", "streamSid": sid, "stop": {"callSid": call}}))
    return Case(
        "camel-case",
        "exotel/Agent-Stream protocol note (names vary by applet/Connect path); Exotel "
        "providers in public code read callSid/streamSid",
        messages,
        frames,
        call,
        tenant="acme",
        call_sid_source="callSid",
        encoding="audio/x-raw",
    )


def _string_custom() -> Case:
    case = _pcm_case("custom-string", "", {"encoding": "raw", "sample_rate": 8000})
    start = orjson.loads(case.messages[1])
    start["start"]["custom_parameters"] = "tenant=acme&campaign=renewals"
    case.messages[1] = _msg(start)
    case.source = "pipecat serializers/exotel.py types custom_parameters as str | dict | None"
    return case


def _nulls() -> Case:
    case = _pcm_case(
        "nulls", "", None, frame_bytes=3200, rate=16000, query={"sample-rate": "16000"}
    )
    start = orjson.loads(case.messages[1])
    start["start"]["custom_parameters"] = None
    case.messages[1] = _msg(start)
    case.tenant = "default"
    case.source = "pipecat: custom_parameters/media_format optional (null); rate from the URL"
    return case


def _mulaw() -> Case:
    sid, call = "MZ-mulaw", "CA-mulaw"
    codes = [bytes((i * 37 + j) % 256 for j in range(800)) for i in range(3)]
    fmt = {"encoding": "audio/x-mulaw;rate=8000", "sample_rate": "8000", "bit_rate": "64kbps"}
    messages = [_snake_start(sid, call, fmt)]
    messages += [_media(sid, i + 2, c) for i, c in enumerate(codes)]
    messages.append(_stop(sid, call, 5))
    frames = [decode_mulaw(c) for c in codes]  # the independent reference decode
    return Case("mulaw", BETA, messages, frames, call, tenant="acme", encoding=fmt["encoding"])


def _tracks() -> Case:
    sid, call = "MZ-both", "CA-both"
    fmt = {"encoding": "audio/L16;rate=8000", "sample_rate": 8000}
    frames = [_audio(1600, i) for i in range(4)]
    tracks = ["inbound", "outbound", "inbound", "outbound"]
    messages = [_snake_start(sid, call, fmt)]
    pairs = enumerate(zip(frames, tracks, strict=True))
    messages += [_media(sid, i + 2, f, track=t) for i, (f, t) in pairs]
    messages.append(_msg({"event": "clear", "stream_sid": sid}))  # from Exotel: known
    messages.append(_stop(sid, call, 6))
    return Case(
        "track-both", BETA, messages, frames, call, tenant="acme", tracks=tracks,
        encoding=fmt["encoding"],
    )  # fmt: skip


def _bridge_strings() -> Case:
    """Numbers as strings, fractional/empty timestamps, missing sequence numbers."""
    sid, call = "MZ-bridge", "CA-bridge"
    frames = [_audio(1600, i) for i in range(3)]
    messages = [_snake_start(sid, call, {"encoding": "raw", "sample_rate": "8000"})]
    shapes = [
        {"chunk": "1", "timestamp": "0.0"},
        {"chunk": "", "timestamp": ""},
        {},
    ]
    for frame, shape in zip(frames, shapes, strict=True):
        messages.append(
            _msg({"event": "media", "stream_sid": sid, "media": {**shape, "payload": _b64(frame)}})
        )
    messages.append(_stop(sid, call, 5))
    return Case(
        "bridge-strings",
        "exotel/Agent-Stream bridge: chunk/timestamp/sequenceNumber as strings, some Connect "
        "streams without them",
        messages,
        frames,
        call,
        tenant="acme",
        encoding="raw",
    )


def _disagreement() -> Case:
    case = _pcm_case(
        "disagree",
        "section 9: the applet's ?sample-rate= and media_format may disagree",
        {"encoding": "raw", "sample_rate": 8000},
        frame_bytes=3200,
        rate=16000,
        query={"sample-rate": "16000"},
    )
    return case


def _base64_variants() -> Case:
    sid, call = "MZ-b64", "CA-b64"
    frames = [_audio(1600, i) for i in range(2)]
    payloads = [
        _b64(frames[0]).rstrip("="),
        "\n".join(_b64(frames[1])[i : i + 76] for i in range(0, 2136, 76)),
    ]
    messages = [_snake_start(sid, call, {"encoding": "raw", "sample_rate": 8000})]
    for i, payload in enumerate(payloads):
        messages.append(
            _msg({"event": "media", "sequence_number": i + 2, "stream_sid": sid,
                  "media": {"payload": payload}})
        )  # fmt: skip
    messages.append(_stop(sid, call, 4))
    return Case(
        "base64-variants",
        "issue 17 item 3: base64 with whitespace (MIME line breaks) or missing padding",
        messages,
        frames,
        call,
        tenant="acme",
        encoding="raw",
    )


def _url_call_sid() -> Case:
    case = _pcm_case(
        "url-callsid",
        "issue 17 item 2: CallSid on the WebSocket URL (the stream-url fetch carries it)",
        {"encoding": "raw", "sample_rate": 8000},
        query={"CallSid": "CA-from-url"},
    )
    start = orjson.loads(case.messages[1])
    del start["start"]["call_sid"]
    case.messages[1] = _msg(start)
    case.call_sid = "CA-from-url"
    case.call_sid_source = "url_CallSid"
    return case


CASES = _cases()
