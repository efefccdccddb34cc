"""What the simulator sends, as Exotel sends it: every documented message variant.

Exotel accounts differ (``shared/docs/exotel-agentstream.md``): numbers arrive as JSON numbers or
strings, ``stream_sid`` is also ``streamSid``, ``media_format.encoding`` is ``raw`` or
``audio/x-raw``, ``bit_rate`` is ``"16"`` (bits) or ``"128"`` (kbps), 8 or 16 kHz, and the
Passthru stream block comes as ``Stream[...]`` fields or one ``Stream=<json>`` value. A
:class:`Variant` fixes one choice per dimension; :func:`variant_for` rotates through all of them
so that any two consecutive calls between them use every spelling.
"""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

SidKey = Literal["stream_sid", "streamSid"]
Encoding = Literal["raw", "audio/x-raw"]
PassthruForm = Literal["brackets", "json"]


@dataclass(frozen=True)
class Variant:
    """One spelling choice per dimension of Exotel's messages, fixed for one call."""

    numbers_as_strings: bool
    sid_key: SidKey
    encoding: Encoding
    sample_rate_hz: int
    passthru_form: PassthruForm

    @property
    def bit_rate(self) -> str:
        # Older pages give bits per sample ("16"), newer ones kbps ("128" at 8 kHz).
        return "16" if self.numbers_as_strings else str(self.sample_rate_hz * 16 // 1000)

    def label(self) -> str:
        return (
            f"{'str' if self.numbers_as_strings else 'num'}/{self.sid_key}/{self.encoding}/"
            f"{self.sample_rate_hz // 1000}k/{self.passthru_form}"
        )


def _all_variants(rates: tuple[int, ...]) -> list[Variant]:
    combos = list(
        itertools.product(
            (False, True),
            ("stream_sid", "streamSid"),
            ("raw", "audio/x-raw"),
            rates,
            ("brackets", "json"),
        )
    )
    # Reversing a mixed-radix index complements every digit: pairing k with n-1-k makes any
    # two consecutive calls use every value of every dimension.
    ordered: list[Variant] = []
    for k in range((len(combos) + 1) // 2):
        for index in (k, len(combos) - 1 - k):
            variant = Variant(*combos[index])  # type: ignore[arg-type]
            if variant not in ordered:
                ordered.append(variant)
    return ordered


def variant_for(index: int, rates: tuple[int, ...] = (8000, 16000)) -> Variant:
    """The ``index``-th call's message variant (cycles through every combination)."""
    variants = _all_variants(rates)
    return variants[index % len(variants)]


def _num(value: int, variant: Variant) -> int | str:
    return str(value) if variant.numbers_as_strings else value


def connected_message() -> bytes:
    return orjson.dumps({"event": "connected"})


def start_message(
    variant: Variant,
    *,
    stream_sid: str,
    call_sid: str,
    account_sid: str,
    from_number: str,
    to_number: str,
    custom_parameters: dict[str, str],
) -> bytes:
    start: dict[str, Any] = {
        variant.sid_key: stream_sid,
        "call_sid": call_sid,
        "account_sid": account_sid,
        "from": from_number,
        "to": to_number,
        "custom_parameters": custom_parameters,
        "media_format": {
            "encoding": variant.encoding,
            "sample_rate": _num(variant.sample_rate_hz, variant),
            "bit_rate": variant.bit_rate,
        },
    }
    return orjson.dumps(
        {
            "event": "start",
            "sequence_number": _num(1, variant),
            variant.sid_key: stream_sid,
            "start": start,
        }
    )


def media_message(
    variant: Variant,
    *,
    stream_sid: str,
    sequence_number: int,
    chunk: int,
    timestamp_ms: int,
    pcm16: bytes,
) -> bytes:
    return orjson.dumps(
        {
            "event": "media",
            "sequence_number": _num(sequence_number, variant),
            variant.sid_key: stream_sid,
            "media": {
                "chunk": _num(chunk, variant),
                "timestamp": _num(timestamp_ms, variant),
                "payload": base64.b64encode(pcm16).decode("ascii"),
            },
        }
    )


def stop_message(
    variant: Variant,
    *,
    stream_sid: str,
    sequence_number: int,
    call_sid: str,
    account_sid: str,
    reason: str,
) -> bytes:
    return orjson.dumps(
        {
            "event": "stop",
            "sequence_number": _num(sequence_number, variant),
            variant.sid_key: stream_sid,
            "stop": {"call_sid": call_sid, "account_sid": account_sid, "reason": reason},
        }
    )


def _exotel_time(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def passthru_params(
    variant: Variant,
    *,
    call_sid: str,
    stream_sid: str,
    from_number: str,
    to_number: str,
    started_at_s: float,
    now_s: float,
    duration_s: int,
    disconnected_by: str,
    stream_url: str,
    custom_field: str = "",
) -> dict[str, str]:
    """The query parameters Exotel's Passthru applet sends right after a Stream/Voicebot applet."""
    params = {
        "CallSid": call_sid,
        "CallFrom": from_number,
        "CallTo": to_number,
        "Direction": "incoming",
        "CallType": "call-attempt",
        "StartTime": _exotel_time(started_at_s),
        "CurrentTime": _exotel_time(now_s),
        "DialCallDuration": "0",
        "digits": '""',
        "flow_id": "sim-flow",
        "CustomField": custom_field,
    }
    stream = {
        "StreamSID": stream_sid,
        "Status": "completed",
        "Duration": str(duration_s),
        "DisconnectedBy": disconnected_by,
        "StreamUrl": stream_url,
        "DetailedStatus": "stream_ended" if disconnected_by == "user" else "stream_closed",
    }
    if variant.passthru_form == "json":
        params["Stream"] = orjson.dumps(stream).decode()
    else:
        params.update({f"Stream[{key}]": value for key, value in stream.items()})
    return params
