"""What the transcription service takes from outside: its config, its sink, per tenant and
campaign a redaction function and the callers' language, and whether an audio partition is
being read again.

Kept apart from :mod:`analytics.asr.service` (which re-exports them) so the service module stays
about the per-call loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from analytics.asr.base import RedactedSpan
from analytics.asr.frontend import FrontEndConfig
from analytics.asr.vad import VadConfig
from schemas.records import DeadLetter, Transcript

__all__ = [
    "Done",
    "LanguageOf",
    "Redact",
    "Redaction",
    "Rereading",
    "ServiceConfig",
    "TranscriptSink",
    "configured_language",
    "never_rereading",
    "no_redaction",
]

Done = Callable[[], None]


class Redaction(NamedTuple):
    """A text as published: redacted, the kinds found, and the spans of the original replaced."""

    text: str
    kinds: list[str]
    spans: Sequence[RedactedSpan] = ()


#: (tenant, campaign, text) -> its redaction
Redact = Callable[[str, str, str], Redaction]
#: (tenant, campaign) -> what the callers speak: a Whisper code, "auto", or None (the
#: recogniser's configured language)
LanguageOf = Callable[[str, str], str | None]
#: audio partition -> whether it is being read again (after a gap, a kill or a rebalance): its
#: calls' next frames are late, not lost (:mod:`analytics.asr.stops`); the worker wires it
Rereading = Callable[[int], bool]


class TranscriptSink(Protocol):
    """Where transcripts and dead letters go; ``publish`` returns once the record is durable."""

    async def publish(self, transcript: Transcript) -> None: ...

    async def dead_letter(self, record: DeadLetter) -> None: ...


def no_redaction(tenant: str, campaign: str, text: str) -> Redaction:
    return Redaction(text, [])


def configured_language(tenant: str, campaign: str) -> str | None:
    return None


def never_rereading(partition: int) -> bool:
    return False


@dataclass(frozen=True)
class ServiceConfig:
    vad: VadConfig = VadConfig()
    front: FrontEndConfig = FrontEndConfig()
    executor_workers: int = 2
    idle_timeout_s: float = 30.0
    stop_grace_s: float = 1.0
    sweep_interval_s: float = 1.0
    max_queued_frames: int = 50_000
    batch_wait_ms: int = 0
    vad_batch_wait_ms: int = 0  # an idle VAD thread waits this long for more calls' frames
    progress_interval_ms: int = 1000
    # Backlog (the lag of the frame being processed: now - ingest's receive time), 0 = off:
    # over shed_lag_ms no speculative decode (batch) or partial (streaming) is made; over
    # max_lag_ms what is published says ``behind``; with skip_over_bound an utterance is then
    # published as a ``gap`` marker, not decoded (see :mod:`analytics.asr.lag`).
    shed_lag_ms: int = 0
    max_lag_ms: int = 0
    skip_over_bound: bool = False
