"""When a call's ``stop`` ends its session, and stops kept for sessions not open.

A ``stop`` (calls topic) ends the call's session once the frame just before the stop's
sequence number is processed (audio may lag the calls topic); when that frame does not come
(no sequence numbers, frames lost at ingest), ``stop_grace_s`` after the call's last frame.
But while the call's audio partition is being read again (a gap, a kill or a rebalance:
:mod:`analytics.gapless`, :mod:`analytics.contiguity`) its remaining frames are late, not lost:
a stop with a sequence number then waits for them, up to the idle timeout; the grace runs again
from the last sweep that found the partition being read again.

A stop with no session is kept for the call's next one (bounded, forgotten after the idle
timeout): one read before the call's first frame (the calls topic can run ahead of the audio),
and one whose session ended: frames coming after it (the tail of a re-read) open a session that
still ends at the stop, with an ``end`` marker, instead of one left to the idle timeout.

A stop may come with ``acked``: the worker commits the stop's offset on the calls topic only
once it is called, when the session that held the stop has ended (its last utterance and
``end`` marker are out) or when a kept stop is forgotten. A worker killed between reading a
stop and ending its call leaves the stop uncommitted, so the successor that reads the call's
audio again reads its stop again too.

Owned by the worker process's :class:`analytics.asr.service.TranscriptionService`. Plain
classes, no I/O.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from analytics.asr.ports import Rereading, never_rereading

logger = logging.getLogger(__name__)


@dataclass
class Stop:
    """A call's stop, as its session holds it."""

    sequence: int | None  # the stop's sequence number (its last frame's + 1), if sent
    held_at: float = -math.inf  # the last sweep that found the call's partition read again
    acked: Callable[[], None] | None = None  # commits the stop's offset (module doc)

    def ack(self) -> None:
        if self.acked is not None:
            self.acked()
            self.acked = None

    def instead_of(self, earlier: Stop | None) -> Stop:
        """This stop replaces ``earlier`` (a stop read twice): that one is acknowledged."""
        if earlier is not None:
            earlier.ack()
        return self

    def reached(self, last_sequence: int) -> bool:
        """Whether every frame before the stop is processed (``last_sequence``: the highest)."""
        return self.sequence is not None and last_sequence >= self.sequence - 1


class Session(Protocol):
    """What the stop rule reads of a call's session (the service's ``CallTranscriber``)."""

    call_sid: str
    stop: Stop | None
    partition: int | None  # the audio partition its frames come from
    last_frame_at: float


class Stops:
    """The service's stop rule and the stops kept for calls with no session (see module doc)."""

    def __init__(
        self,
        grace_s: float,
        idle_timeout_s: float,
        rereading: Rereading = never_rereading,
        max_calls: int = 10_000,
    ) -> None:
        self.grace_s = grace_s
        self.idle_timeout_s = idle_timeout_s
        self.rereading = rereading
        self.max_calls = max_calls
        self._kept: dict[str, tuple[Stop, float]] = {}  # sid -> (stop, kept at)

    def keep(self, call_sid: str, stop: Stop, now: float) -> None:
        """A stop with no session open: the call's next session gets it. A stop it replaces,
        or one over the bound, is acknowledged at once."""
        old = self._kept.get(call_sid)
        if old is not None:
            old[0].ack()
        elif len(self._kept) >= self.max_calls:
            stop.ack()
            return
        self._kept[call_sid] = (stop, now)

    def take(self, call_sid: str) -> Stop | None:
        """The stop kept for the call (a session opens for it), if any."""
        kept = self._kept.pop(call_sid, None)
        return None if kept is None else kept[0]

    def expire(self, now: float) -> None:
        """Forget the stops kept longer than the idle timeout: no frame came for those calls."""
        before = now - self.idle_timeout_s
        for sid in [s for s, (_, at) in self._kept.items() if at <= before]:
            self._kept.pop(sid)[0].ack()

    def due(self, session: Session, now: float) -> bool:
        """Whether a session ends now: idle past the timeout, or stopped and past the grace."""
        if now - session.last_frame_at >= self.idle_timeout_s:
            return True  # also the bound of a re-read whose audio never comes
        stop, partition = session.stop, session.partition
        if stop is None:
            return False
        if stop.sequence is not None and partition is not None and self.rereading(partition):
            if stop.held_at == -math.inf:
                logger.info(
                    "call %s stopped: waiting for its frames, partition %d is being read again",
                    *(session.call_sid, partition),
                )
            stop.held_at = now
            return False
        return now - max(session.last_frame_at, stop.held_at) >= self.grace_s
