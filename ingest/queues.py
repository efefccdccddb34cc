"""The sink's per-partition queues and per-call routing state (no I/O, no Kafka).

:class:`PartitionQueue`: one topic partition's pending records and its sender task;
:class:`AudioRoute`: where a call's frames go and their static headers (per track);
:class:`GapTally`: frames of a call the sink dropped and has not reported yet.
"""

from __future__ import annotations

import asyncio
from collections import deque

from ingest.outgoing import CallTag, Outgoing
from schemas.records import AUDIO_HEADER_PREFIX, static_audio_headers


class PartitionQueue:
    """Pending records of one topic partition and the task that sends them in order."""

    __slots__ = ("topic", "partition", "audio", "pending", "wake", "task", "in_flight")

    def __init__(self, topic: str, partition: int, audio: bool) -> None:
        self.topic = topic
        self.partition = partition
        self.audio = audio
        self.pending: deque[Outgoing] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.in_flight = 0


class GapTally:
    """Audio frames of one call the sink dropped and has not reported in a gap record yet.

    Per call, owned by the ingest process (its sink) until the gap record is written.
    """

    __slots__ = ("tag", "first_seq", "last_seq", "count")

    def __init__(self, tag: CallTag, seq: int) -> None:
        self.tag = tag
        self.first_seq = seq
        self.last_seq = seq
        self.count = 0


class AudioRoute:
    """Where one call's frames go and the part of their headers that never changes.

    Per call, owned by the ingest process (its sink) from the first frame to the stop record.
    """

    __slots__ = ("queue", "static", "static_outbound", "rate_header")

    def __init__(self, queue: PartitionQueue, call: CallTag) -> None:
        self.queue = queue
        self.static = self._static(call, "inbound")
        self.static_outbound = self._static(call, "outbound")
        self.rate_header = (
            AUDIO_HEADER_PREFIX + "sample_rate_hz",
            str(call.sample_rate_hz).encode(),
        )

    @staticmethod
    def _static(call: CallTag, track: str) -> list[tuple[str, bytes]]:
        return static_audio_headers(
            call.call_sid, call.stream_sid, call.tenant, call.campaign, track, call.encoding
        )
