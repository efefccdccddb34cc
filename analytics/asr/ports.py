"""What the transcription service takes from outside: its config, its sink, a redaction function.

Kept apart from :mod:`analytics.asr.service` (which re-exports them) so the service module stays
about the per-call loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from analytics.asr.frontend import FrontEndConfig
from analytics.asr.vad import VadConfig
from schemas.records import DeadLetter, Transcript

__all__ = ["Done", "Redact", "ServiceConfig", "TranscriptSink", "no_redaction"]

Done = Callable[[], None]
Redact = Callable[[str, str, str], tuple[str, list[str]]]


class TranscriptSink(Protocol):
    """Where transcripts and dead letters go; ``publish`` returns once the record is durable."""

    async def publish(self, transcript: Transcript) -> None: ...

    async def dead_letter(self, record: DeadLetter) -> None: ...


def no_redaction(tenant: str, campaign: str, text: str) -> tuple[str, list[str]]:
    return text, []


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
    progress_interval_ms: int = 1000
