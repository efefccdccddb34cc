"""The Kafka topic catalogue: one place that names every topic, its key, value and policy."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.records import (
    AudioFrameMeta,
    CallEvent,
    CallSummary,
    DeadLetter,
    Decision,
    Record,
    Score,
    Transcript,
    WorkerHeartbeat,
)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    value: type[Record]
    value_encoding: str
    partitions: int
    cleanup_policy: str
    retention_ms: int
    description: str


_DAY_MS = 24 * 3600 * 1000

AUDIO = TopicSpec(
    "agentstream.audio",
    "call SID",
    AudioFrameMeta,
    "raw PCM16 LE mono bytes; metadata in 'as-*' headers (AudioFrameMeta)",
    8,
    "delete",
    1 * _DAY_MS,
    "caller audio frames, in order per call",
)
CALLS = TopicSpec(
    "agentstream.calls",
    "call SID",
    CallEvent,
    "JSON",
    8,
    "delete",
    30 * _DAY_MS,
    "call lifecycle: start, stop, dtmf, mark, gaps, Passthru/Connect/status callbacks",
)
TRANSCRIPTS = TopicSpec(
    "agentstream.transcripts",
    "call SID",
    Transcript,
    "JSON",
    8,
    "delete",
    30 * _DAY_MS,
    "partial and final utterances, PII-redacted",
)
SCORES = TopicSpec(
    "agentstream.scores",
    "call SID",
    Score,
    "JSON",
    8,
    "delete",
    30 * _DAY_MS,
    "per-utterance sentiment, keywords and rolling call state",
)
DECISIONS = TopicSpec(
    "agentstream.decisions",
    "call SID",
    Decision,
    "JSON",
    8,
    "delete",
    30 * _DAY_MS,
    "escalate/continue decisions with rule, reason, target group and evidence",
)
DEADLETTER = TopicSpec(
    "agentstream.deadletter",
    "call SID or none",
    DeadLetter,
    "JSON",
    1,
    "delete",
    30 * _DAY_MS,
    "anything that could not be processed, with the raw bytes and the error",
)

CALL_SUMMARIES = TopicSpec(
    "agentstream.call_summaries",
    "call SID",
    CallSummary,
    "JSON",
    8,
    "compact",
    365 * _DAY_MS,
    "one summary per call when it ends (latest revision wins): what analysts query most",
)

WORKERS = TopicSpec(
    "agentstream.workers",
    "worker id",
    WorkerHeartbeat,
    "JSON",
    1,
    "delete",
    1 * 3600 * 1000,
    "analytics worker heartbeats: models loaded, partitions held (pipeline readiness)",
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    AUDIO,
    CALLS,
    TRANSCRIPTS,
    SCORES,
    DECISIONS,
    DEADLETTER,
    CALL_SUMMARIES,
    WORKERS,
)


def by_name(name: str) -> TopicSpec:
    for spec in ALL_TOPICS:
        if spec.name == name:
            return spec
    raise KeyError(name)


def prefixed(spec: TopicSpec, prefix: str) -> str:
    """Topic name with an optional namespace prefix (tests use unique prefixes)."""
    return f"{prefix}{spec.name}" if prefix else spec.name
