"""Tolerant readers of Exotel's fields: integers, bounded strings, sample rates, encodings,
custom parameters. Used by :mod:`schemas.exotel`'s models; pure functions, no I/O.

Each returns None (or an empty value) for what it cannot read, so the caller falls back to a
default, and raises a pydantic ``int_range`` / ``too_long`` error for what cannot be bounded.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

import orjson
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from schemas.errors import ProtocolError

SUPPORTED_SAMPLE_RATES_HZ = (8000, 16000, 24000)
DEFAULT_SAMPLE_RATE_HZ = 8000
MAX_NESTING_DEPTH = 8
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Length limits (characters). Exotel's SIDs are 32 characters; custom parameters are at most
# 3 with 256 characters in all: generous bounds, but bounds, since these are copied into every
# record of the call.
MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 256
MAX_CUSTOM_PARAMS = 32
MAX_CUSTOM_KEY_CHARS = 64
MAX_CUSTOM_VALUE_CHARS = 512
MAX_CUSTOM_TOTAL_CHARS = 4096
FATAL_ERRORS = frozenset({"int_range", "too_long"})


class BadFrameError(ProtocolError):
    """One message that cannot be used: dead-lettered and counted; the call goes on."""


# --- tolerant fields ------------------------------------------------------------------------


def _in_range(value: int) -> int:
    if INT64_MIN <= value <= INT64_MAX:
        return value
    raise PydanticCustomError(
        "int_range", "integer {value} is outside the 64-bit range", {"value": str(value)[:40]}
    )


def _opt_int(value: Any) -> int | None:
    """``1``, ``"1"``, ``1.7`` (-> 1), ``""``/None/garbage (-> None); out of range raises.

    On every media frame (three fields): the common shapes take one ``int()`` each.
    """
    kind = type(value)
    if kind is str and len(value) <= 20:
        try:
            number = int(value)  # strips whitespace itself
        except ValueError:
            return _slow_int(value)
        return number if INT64_MIN <= number <= INT64_MAX else _in_range(number)
    if kind is int:
        return value if INT64_MIN <= value <= INT64_MAX else _in_range(value)
    return _slow_int(value)


def _slow_int(value: Any) -> int | None:
    if type(value) is float:
        return _in_range(int(value)) if math.isfinite(value) else None
    if type(value) is not str:
        return None  # bool, list, dict, null: unreadable
    text = value.strip()
    if not text:
        return None
    if len(text) > 40:  # past 64 bits for sure; int() of a huge string costs O(n^2)
        if text.lstrip("-").isdigit():
            raise PydanticCustomError("int_range", "integer is outside the 64-bit range")
        return None
    try:
        return _in_range(int(text))
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            return None
        return _in_range(int(number)) if math.isfinite(number) else None


def bounded(limit: int) -> Any:
    def check(value: Any) -> str | None:
        if type(value) is str:
            if len(value) <= limit:
                return value
            text = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            text = str(value)
        else:
            return None  # null, bool, object: unreadable -> default
        if len(text) > limit:
            raise PydanticCustomError(
                "too_long", "longer than {limit} characters", {"limit": limit}
            )
        return text

    return BeforeValidator(check)


OptInt = Annotated[int | None, BeforeValidator(_opt_int)]
OptId = Annotated[str | None, bounded(MAX_ID_CHARS)]
OptText = Annotated[str | None, bounded(MAX_TEXT_CHARS)]


def read_custom_parameters(value: Any) -> dict[str, str]:
    """An object, a ``k=v&k2=v2`` or JSON string, null or ``""``: always a bounded dict."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                value = {}
        else:
            value = dict(parse_qsl(text, keep_blank_values=True))
    if not isinstance(value, dict):
        return {}
    if len(value) > MAX_CUSTOM_PARAMS:
        raise PydanticCustomError(
            "too_long", "more than {n} custom parameters", {"n": MAX_CUSTOM_PARAMS}
        )
    out: dict[str, str] = {}
    total = 0
    for key, item in value.items():
        text = item if isinstance(item, str) else "" if item is None else _json_text(item)
        if len(key) > MAX_CUSTOM_KEY_CHARS or len(text) > MAX_CUSTOM_VALUE_CHARS:
            raise PydanticCustomError(
                "too_long", "custom parameter {key!r} too long", {"key": key[:40]}
            )
        total += len(key) + len(text)
        out[key] = text
    if total > MAX_CUSTOM_TOTAL_CHARS:
        raise PydanticCustomError(
            "too_long",
            "custom parameters longer than {n} characters",
            {"n": MAX_CUSTOM_TOTAL_CHARS},
        )
    return out


def _json_text(item: Any) -> str:
    return orjson.dumps(item).decode() if isinstance(item, dict | list) else str(item)


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(k)?\s*(?:hz)?\s*$", re.IGNORECASE)


def parse_rate(value: Any) -> int | None:
    """A supported sample rate from ``8000``, ``"8000"``, ``"8000Hz"``, ``"8k"``, ``"16kHz"``.

    None when unreadable or unsupported (the caller falls back to the URL, then 8000).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        rate = value
    elif isinstance(value, str) and len(value) <= 20 and (match := _RATE.match(value)):
        rate = float(match.group(1)) * (1000 if match.group(2) else 1)
    else:
        return None
    if not math.isfinite(rate) or rate != int(rate):
        return None
    return int(rate) if int(rate) in SUPPORTED_SAMPLE_RATES_HZ else None


Codec = Literal["pcm16", "mulaw", "alaw", "unknown"]
_PCM16_NAMES = frozenset(
    {"raw", "audio/x-raw", "base64", "pcm16", "pcm", "slin", "slin16", "linear16", "l16",
     "audio/pcm", "audio/x-l16", "audio/l16", "audio/x-pcm", "pcm_s16le", "s16le"}
)  # fmt: skip
_MULAW_NAMES = frozenset(
    {"audio/x-mulaw", "audio/mulaw", "audio/pcmu", "mulaw", "ulaw", "mu-law", "pcmu", "g711_ulaw",
     "audio/basic", "x-mulaw"}
)  # fmt: skip
_ALAW_NAMES = frozenset(
    {"audio/x-alaw", "audio/alaw", "audio/pcma", "alaw", "a-law", "pcma", "g711_alaw"}
)


def classify_encoding(text: str | None) -> tuple[Codec, int | None]:
    """``(codec, rate from ";rate=N")`` for a ``media_format.encoding`` string.

    ``audio/L16;rate=16000`` -> ``("pcm16", 16000)``; missing -> PCM16 (Exotel's documented
    default for these applets); anything not recognised -> ``"unknown"`` (treated as PCM16).
    """
    if text is None or not text.strip():
        return "pcm16", None
    name, *params = (part.strip() for part in text.lower().split(";"))
    rate: int | None = None
    for param in params:
        key, _, val = param.partition("=")
        if key.strip() == "rate":
            rate = parse_rate(val)
    if name in _PCM16_NAMES:
        return "pcm16", rate
    if name in _MULAW_NAMES:
        return "mulaw", rate
    if name in _ALAW_NAMES:
        return "alaw", rate
    return "unknown", rate
