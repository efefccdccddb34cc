"""Kafka topic records: the values written to every ``agentstream.*`` topic.

Every JSON value carries ``schema_version``; adding a field with a default is compatible,
anything else is a new version. Units are in field names; timestamps are UTC epoch
milliseconds (``*_at_ms``) so any tool can compare them without parsing.

Audio frames are the one binary topic: the value is the raw PCM16 LE chunk as Exotel sent it
(decoded from base64, and from G.711 when the stream was μ-law or A-law) and the metadata
travels in Kafka headers (:class:`AudioFrameMeta`),
so a frame costs no JSON encoding on the hot path and analysts get playable audio bytes.
"""

from __future__ import annotations

from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class Record(BaseModel):
    """Base of every topic value: frozen, JSON-serialisable, versioned."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: int = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> Record:
        return cls.model_validate(orjson.loads(raw))


# --- agentstream.audio ------------------------------------------------------------------------

AUDIO_HEADER_PREFIX = "as-"


class AudioFrameMeta(Record):
    """Headers of one ``agentstream.audio`` record (each header value is UTF-8 text).

    The record key is the call SID and the value is the raw PCM16 LE mono chunk.
    """

    call_sid: str
    stream_sid: str
    tenant: str = "default"
    campaign: str = "default"
    track: Literal["inbound", "outbound"] = Field(
        "inbound", description="inbound: the caller; outbound: the bot's or agent's audio"
    )
    encoding: str | None = Field(
        None, description="media_format.encoding as Exotel sent it; the value is PCM16 anyway"
    )
    sequence_number: int
    chunk: int | None = None
    timestamp_ms: int | None = Field(None, description="Exotel's media.timestamp")
    sample_rate_hz: int
    received_at_ms: int = Field(description="wall clock when ingest read the frame, UTC ms")
    offset_ms: int = Field(0, description="audio position of this chunk from stream start")

    def to_headers(self) -> list[tuple[str, bytes]]:
        return [
            (AUDIO_HEADER_PREFIX + name, str(value).encode())
            for name, value in self.model_dump().items()
            if value is not None
        ]

    @classmethod
    def from_headers(cls, headers: list[tuple[str, bytes]] | dict[str, bytes]) -> AudioFrameMeta:
        items = headers.items() if isinstance(headers, dict) else headers
        fields = {
            name[len(AUDIO_HEADER_PREFIX) :]: value.decode()
            for name, value in items
            if name.startswith(AUDIO_HEADER_PREFIX)
        }
        return cls.model_validate(fields)


def static_audio_headers(
    call_sid: str,
    stream_sid: str,
    tenant: str,
    campaign: str,
    track: str = "inbound",
    encoding: str | None = None,
) -> list[tuple[str, bytes]]:
    """The per-call (and per-track) part of the audio headers, in :class:`AudioFrameMeta`
    field order."""
    h = AUDIO_HEADER_PREFIX
    headers = [
        (h + "schema_version", str(SCHEMA_VERSION).encode()),
        (h + "call_sid", call_sid.encode()),
        (h + "stream_sid", stream_sid.encode()),
        (h + "tenant", tenant.encode()),
        (h + "campaign", campaign.encode()),
        (h + "track", track.encode()),
    ]
    if encoding is not None:
        headers.append((h + "encoding", encoding.encode()))
    return headers


def audio_headers(
    static: list[tuple[str, bytes]],
    sequence_number: int,
    chunk: int | None,
    timestamp_ms: int | None,
    rate_header: tuple[str, bytes],
    received_at_ms: int,
    offset_ms: int,
) -> list[tuple[str, bytes]]:
    """Exactly ``AudioFrameMeta(...).to_headers()`` without building a model per frame
    (a unit test holds the two equal); the model costs ~20 us a frame at 10k frames/s."""
    h = AUDIO_HEADER_PREFIX
    headers = [*static, (h + "sequence_number", str(sequence_number).encode())]
    if chunk is not None:
        headers.append((h + "chunk", str(chunk).encode()))
    if timestamp_ms is not None:
        headers.append((h + "timestamp_ms", str(timestamp_ms).encode()))
    headers.append(rate_header)
    headers.append((h + "received_at_ms", str(received_at_ms).encode()))
    headers.append((h + "offset_ms", str(offset_ms).encode()))
    return headers


# --- agentstream.calls ------------------------------------------------------------------------

CallEventKind = Literal[
    "start",
    "stop",
    "dtmf",
    "mark",
    "gap",
    "duplicate",
    "passthru",
    "connect",
    "status",
    "handoff",
    "analysed",
]


class CallEvent(Record):
    """One lifecycle event of a call: from the WebSocket, or from an Exotel HTTP callback."""

    kind: CallEventKind
    call_sid: str
    stream_sid: str = ""
    tenant: str = "default"
    campaign: str = "default"
    custom_parameters: dict[str, str] = Field(default_factory=dict)
    occurred_at_ms: int
    sequence_number: int | None = None
    # start
    account_sid: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    sample_rate_hz: int | None = None
    encoding: str | None = Field(None, description="media_format.encoding as Exotel sent it")
    codec: str | None = Field(None, description="pcm16, mulaw, alaw or unknown (read as pcm16)")
    call_sid_source: str | None = Field(
        None, description="call_sid, callSid, leg_sid, url_CallSid or stream_sid"
    )
    # stop: "stopped", "callended", "disconnected", "timeout", "session_cap", "handoff", ...
    stop_reason: str | None = None
    # dtmf / mark
    dtmf_digit: str | None = None
    dtmf_duration_ms: int | None = None
    mark_name: str | None = None
    # gap / duplicate: what arrived versus what was expected, and frames lost
    expected_sequence: int | None = None
    received_sequence: int | None = None
    dropped_frames: int | None = None
    # passthru / connect / status: every parameter Exotel sent, verbatim
    params: dict[str, str] = Field(default_factory=dict)
    answer: str | None = Field(None, description="what we answered a callback, e.g. '302'")
    # passthru: whether the answer saw the call's whole analysis, and how long it waited for it
    complete: bool | None = Field(
        None, description="passthru: the analysis was complete; analysed: the call's last audio"
    )
    waited_ms: float | None = Field(None, description="passthru: time spent waiting for analysis")
    # analysed (routing's watermark): everything heard up to this audio offset is evaluated
    audio_ms: int | None = Field(None, description="audio offset from stream start, analysed")
    audio_received_at_ms: int | None = Field(
        None, description="wall clock when ingest received the last analysed frame, UTC ms"
    )
    untranscribed_utterances: int | None = Field(
        None, description="analysed: the call's utterances so far not transcribed (gaps)"
    )


# --- agentstream.transcripts ------------------------------------------------------------------


class Word(BaseModel):
    model_config = ConfigDict(frozen=True)

    word: str
    start_ms: int
    end_ms: int
    confidence: float | None = None


class Transcript(Record):
    """A partial hypothesis or a final utterance; ``text`` is always PII-redacted."""

    call_sid: str
    stream_sid: str = ""
    tenant: str = "default"
    campaign: str = "default"
    utterance_id: str
    utterance_index: int
    is_final: bool
    text: str
    pii_kinds: list[str] = Field(default_factory=list)
    start_ms: int
    end_ms: int
    confidence: float | None = None
    words: list[Word] = Field(
        default_factory=list,
        description=(
            "word timings (ms from call start); a redacted word keeps its times and its text is "
            "the placeholder ('[PHONE]'), so the audio of exactly those words can be muted"
        ),
    )
    language: str | None = Field(
        None,
        description="the language: configured, or detected per call ('auto'); None: unknown",
    )
    engine: str
    speech_end_at_ms: int = Field(description="wall clock when ingest received the last frame")
    produced_at_ms: int
    latency_ms: float = Field(description="speech end (ingest receipt) to transcript publish")
    marker: Literal["progress", "end", "gap"] | None = Field(
        None,
        description="not an utterance but a watermark (empty text): 'progress' = the call's "
        "audio is transcribed up to end_ms; 'end' = the call stopped and its last utterance is "
        "out; 'gap' = start_ms..end_ms was speech not transcribed: the worker was over its "
        "backlog bound and set to skip (ASR_SKIP_OVER_BOUND); the audio stays in the topic",
    )
    behind: bool = Field(
        False, description="the worker was over its backlog bound (ASR_MAX_LAG_S) behind the call"
    )


# --- agentstream.scores -----------------------------------------------------------------------


class Sentiment(BaseModel):
    model_config = ConfigDict(frozen=True)

    score: float = Field(ge=-1.0, le=1.0)
    label: Literal["negative", "neutral", "positive"]
    confidence: float = Field(ge=0.0, le=1.0)
    engine: str = ""


class KeywordHit(BaseModel):
    model_config = ConfigDict(frozen=True)

    category: str
    phrase: str
    matched: str
    span: tuple[int, int] = Field(description="character offsets [start, end) in the text")


# Owned by the analytics scoring worker that holds the call's partition; every Score carries
# a copy, which is how routing sees it. (Not in the docstring: that is the JSON Schema's text.)
class CallState(BaseModel):
    """Running per-call analytics folded over every scored utterance."""

    model_config = ConfigDict(frozen=True)

    utterance_count: int = 0
    sentiment_last_n: list[float] = Field(default_factory=list)
    sentiment_mean_last_n: float = 0.0
    sentiment_ewma: float = 0.0
    sentiment_trend: float = 0.0
    sentiment_min: float = 0.0
    keyword_hits: dict[str, int] = Field(default_factory=dict)
    talk_time_ms: int = 0
    last_speech_end_ms: int = 0
    silence_since_speech_ms: int = 0
    last_dtmf: str | None = None
    repeat_count: int = Field(
        0, description="consecutive utterances each repeating one of its run (first rule's count)"
    )
    repeat_counts: dict[str, int] = Field(
        default_factory=dict,
        description="per repetition rule id: consecutive repeats at that rule's similarity",
    )
    recent_texts: list[str] = Field(default_factory=list)
    started_at_ms: int | None = None
    untranscribed_utterances: int = Field(
        0, description="utterances not transcribed ('gap' markers): the figures above miss them"
    )


class Score(Record):
    call_sid: str
    stream_sid: str = ""
    tenant: str = "default"
    campaign: str = "default"
    utterance_id: str
    utterance_index: int = 0
    text: str
    start_ms: int = 0
    end_ms: int = 0
    sentiment: Sentiment
    keywords: list[KeywordHit] = Field(default_factory=list)
    pii_kinds: list[str] = Field(default_factory=list)
    state: CallState
    speech_end_at_ms: int = 0
    transcript_at_ms: int = 0
    scored_at_ms: int
    latency_ms: float = Field(description="transcript publish to score publish")
    marker: Literal["progress", "end", "gap"] | None = Field(
        None, description="a transcript watermark passed through (see Transcript.marker)"
    )
    behind: bool = Field(False, description="the transcript's (see Transcript.behind)")


# --- agentstream.decisions --------------------------------------------------------------------


class Evidence(BaseModel):
    model_config = ConfigDict(frozen=True)

    utterance_id: str
    text: str


class Decision(Record):
    call_sid: str
    stream_sid: str = ""
    tenant: str = "default"
    campaign: str = "default"
    decision: Literal["escalate", "continue"]
    rule_id: str | None = None
    reason: str
    target_group: str | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    utterance_id: str | None = None
    speech_end_at_ms: int = 0
    decided_at_ms: int
    latency_ms: float = Field(description="score publish to decision publish")
    complete: bool = Field(
        True,
        description="False when made on part of the call: from analysis over the worker's "
        "backlog bound behind it (Score.behind), or with some of its speech not transcribed "
        "(CallState.untranscribed_utterances)",
    )


# --- agentstream.workers ----------------------------------------------------------------------


class WorkerHeartbeat(Record):
    """An analytics worker's liveness and readiness, sent every ``interval_ms``.

    ``ready``: its models are loaded and it holds its share of the audio partitions (or the group
    gave it none). Routing's ``/ready`` counts a worker live for three intervals after its last
    heartbeat; ``state='stopping'`` removes it at once.
    """

    worker_id: str
    host: str = ""
    pid: int = 0
    app_id: str = ""
    state: Literal["starting", "ready", "stopping"]
    models_loaded: bool = False
    assigned: bool = False
    audio_partitions: list[int] = Field(default_factory=list)
    partitions_total: int = 0
    interval_ms: int
    sent_at_ms: int


# --- agentstream.deadletter -------------------------------------------------------------------


class DeadLetter(Record):
    """A message or record that could not be processed, with its original bytes."""

    stage: str = Field(description="ingest, asr, scoring, routing ...")
    error: str
    call_sid: str | None = None
    stream_sid: str | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    raw_base64: str = Field("", description="the original bytes, base64")
    occurred_at_ms: int


# --- agentstream.call_summaries ---------------------------------------------------------------


class CallSummary(Record):
    """One call's summary, published when the call ends (stop, or idle timeout).

    The topic is compacted and keyed by the call SID: a fact that arrives after the summary (a
    Passthru answer, a late decision) is published as a new summary of the same call with a
    higher ``revision``, and compaction keeps the latest. Sentiment fields are ``None`` for a
    call in which nobody spoke.
    """

    call_sid: str
    stream_sid: str = ""
    tenant: str = "default"
    campaign: str = "default"
    from_number: str | None = None
    started_at_ms: int | None = Field(None, description="stream start, UTC ms")
    ended_at_ms: int = Field(description="stream stop, or the last record of an idle call")
    end_reason: str = Field(description="the stop reason, or 'idle_timeout'")
    duration_ms: int = Field(description="start to end, wall clock")
    talk_time_ms: int = Field(0, description="caller speech found by VAD (sum of utterances)")
    silence_time_ms: int = Field(0, description="duration minus talk time")
    longest_silence_ms: int = Field(0, description="longest gap between utterances")
    utterance_count: int = 0
    sentiment_start: float | None = None
    sentiment_end: float | None = None
    sentiment_min: float | None = None
    sentiment_mean: float | None = None
    keyword_hits: dict[str, int] = Field(
        default_factory=dict, description="keyword hits by category"
    )
    pii_kinds: list[str] = Field(default_factory=list, description="PII kinds redacted")
    escalated: bool = False
    escalation_rule_id: str | None = None
    escalation_reason: str | None = None
    escalation_target_group: str | None = None
    escalated_at_ms: int | None = None
    decision_count: int = 0
    passthru_answer: str | None = Field(None, description="what we answered Passthru: 200 / 302")
    passthru_complete: bool | None = Field(
        None, description="every utterance heard before the answer had been decided"
    )
    passthru_at_ms: int | None = None
    untranscribed_utterances: int = Field(
        0, description="utterances heard but not transcribed (ASR backlog): not counted above"
    )
    revision: int = Field(1, description="1 for the first summary; +1 for each later fact")
    summarised_at_ms: int
