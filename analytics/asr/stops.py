"""Stops that arrive before their call's first frame (the calls topic can run ahead of the audio).

Owned by the worker process's :class:`analytics.asr.service.TranscriptionService`: a stop kept
here is handed to the call's session when its first frame comes; bounded (``max_calls``) and
forgotten after the idle timeout. Plain class, no I/O.
"""

from __future__ import annotations


class EarlyStops:
    """Call SID -> (the stop's sequence number, when it was seen)."""

    def __init__(self, max_calls: int = 10_000) -> None:
        self.max_calls = max_calls
        self._stops: dict[str, tuple[int | None, float]] = {}

    def add(self, call_sid: str, sequence_number: int | None, seen_at: float) -> None:
        if len(self._stops) < self.max_calls:
            self._stops[call_sid] = (sequence_number, seen_at)

    def pop(self, call_sid: str) -> tuple[int | None, float] | None:
        return self._stops.pop(call_sid, None)

    def expire(self, before: float) -> None:
        """Forget the stops seen before ``before``: no frame ever came for those calls."""
        for sid in [s for s, (_, seen_at) in self._stops.items() if seen_at <= before]:
            del self._stops[sid]
