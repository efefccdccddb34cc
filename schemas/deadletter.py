"""The one builder of dead-letter records, so every stage fills the same fields the same way.

A dead letter carries the stage that gave up, a one-line error (at most
:data:`MAX_ERROR_CHARS` characters), the call it belongs to when known, where the offending record
was read from (topic, partition, offset) and its original bytes, base64.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from schemas.records import DeadLetter

MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record that could not be processed was read from."""

    topic: str
    partition: int
    offset: int


def error_text(error: str | BaseException) -> str:
    """The first line of an error, bounded; an exception reads as ``Type: message``."""
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}"
    else:
        text = error
    lines = text.strip().splitlines()
    return (lines[0] if lines else "")[:MAX_ERROR_CHARS]


def dead_letter(
    stage: str,
    error: str | BaseException,
    *,
    raw: bytes | str | None = None,
    call_sid: str | bytes | None = None,
    stream_sid: str | None = None,
    source: Source | None = None,
    occurred_at_ms: int | None = None,
) -> DeadLetter:
    """Build the dead-letter record for ``raw`` that ``stage`` could not process."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    if isinstance(call_sid, bytes):
        call_sid = call_sid.decode("utf-8", "replace")
    return DeadLetter(
        stage=stage,
        error=error_text(error),
        call_sid=call_sid or None,
        stream_sid=stream_sid or None,
        source_topic=source.topic if source else None,
        source_partition=source.partition if source else None,
        source_offset=source.offset if source else None,
        raw_base64=base64.b64encode(raw or b"").decode("ascii"),
        occurred_at_ms=time.time_ns() // 1_000_000 if occurred_at_ms is None else occurred_at_ms,
    )
