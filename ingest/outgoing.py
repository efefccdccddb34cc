"""What a stream session asks to be written: :class:`Outgoing` records, and the call they tag.

The session (:mod:`ingest.session`) returns these; the sink (:mod:`ingest.sink`) alone picks
their partition, encodes their Kafka headers and queues them. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TopicKind = Literal["audio", "calls", "deadletter"]
AUDIO: TopicKind = "audio"
CALLS: TopicKind = "calls"
DEADLETTER: TopicKind = "deadletter"

Headers = list[tuple[str, bytes]]
NO_HEADERS: Headers = []  # shared by every lifecycle record: never mutated


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one per call
class CallTag:
    """Who a call belongs to: one per started stream, owned by the ingest process.

    Made by the session at ``start``; every audio frame of the call points to it, so the sink
    can encode the frame's headers and write a ``gap`` record for frames it had to drop.
    """

    call_sid: str
    stream_sid: str
    tenant: str
    campaign: str
    custom_parameters: dict[str, str] = field(default_factory=dict)
    sample_rate_hz: int = 8000
    encoding: str | None = None  # media_format.encoding as Exotel sent it (audio headers)


class Outgoing:
    """One record a session wants written to ``topic_kind``.

    Audio frames carry their :class:`CallTag` and frame metadata (``seq``, ``chunk``,
    ``media_timestamp_ms``, ``received_at_ms``, ``offset_ms``, ``outbound``), from which the
    sink encodes the ``as-*`` headers; lifecycle and dead-letter records carry their JSON
    value only.
    ``ends_call`` marks a call's ``stop`` record: the sink writes the call's pending ``gap``
    record first. The sink queues this object as it is (no copy per frame) and fills the
    fields only it owns: ``headers``, ``timestamp_ms`` (the Kafka timestamp) and ``size``.
    """

    __slots__ = (
        "topic_kind",
        "key",
        "value",
        "read_at",
        "call",
        "seq",
        "chunk",
        "media_timestamp_ms",
        "received_at_ms",
        "offset_ms",
        "ends_call",
        "outbound",
        "headers",
        "timestamp_ms",
        "size",
    )

    def __init__(
        self,
        topic_kind: TopicKind,
        key: bytes,
        value: bytes,
        read_at: float,
        call: CallTag | None = None,
        seq: int = 0,
        chunk: int | None = None,
        media_timestamp_ms: int | None = None,
        received_at_ms: int = 0,
        offset_ms: int = 0,
        ends_call: bool = False,
        outbound: bool = False,
    ) -> None:
        self.topic_kind = topic_kind
        self.key = key
        self.value = value
        self.read_at = read_at
        self.call = call
        self.seq = seq
        self.chunk = chunk
        self.media_timestamp_ms = media_timestamp_ms
        self.received_at_ms = received_at_ms
        self.offset_ms = offset_ms
        self.ends_call = ends_call
        self.outbound = outbound  # an audio frame of the bot's/agent's track, not the caller's
        # filled in by the sink when it queues the record
        self.headers: Headers = NO_HEADERS
        self.timestamp_ms = received_at_ms
        self.size = 0
