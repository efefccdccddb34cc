"""Per-call ASR progress: how far into each call's audio every utterance is published.

The audio agent commits offsets in offset order per partition, across calls (a frame is
committed only once every earlier frame of its partition is done), so a worker that takes a
partition over re-reads calls other than the oldest open one from mid-call. This marker lets it
skip, per call, the frames whose audio is already covered by published final transcripts: each
call resumes where it left off, and its replayed audio is not transcribed again.

The marker is the end (``end_ms``, the call's audio timeline, as ``AudioFrameMeta.offset_ms``) of
the call's last final transcript; it is rebuilt from ``agentstream.transcripts`` (co-partitioned
with the audio by call SID) when a partition is assigned (:mod:`analytics.resume`). A frame is
skipped only if it ends at or before the marker; the silence after an utterance is transcribed
again, which publishes nothing. Plain class, no I/O.
"""

from __future__ import annotations

from collections import OrderedDict

from schemas.records import AudioFrameMeta, Transcript

MAX_CALLS = 200_000  # markers kept (least recently updated dropped first)


class CallProgress:
    """Markers of the calls on this worker's partitions (see module docstring)."""

    def __init__(self, max_calls: int = MAX_CALLS) -> None:
        self.max_calls = max_calls
        self._marks: OrderedDict[str, tuple[int, int]] = OrderedDict()  # sid -> (partition, ms)
        self.skipped = 0

    def note(self, transcript: Transcript, partition: int) -> None:
        """A final transcript was published (or read back): its audio is done."""
        if not transcript.is_final:
            return
        old = self._marks.get(transcript.call_sid)
        end = max(transcript.end_ms, old[1] if old else -1)
        self._marks[transcript.call_sid] = (partition, end)
        self._marks.move_to_end(transcript.call_sid)
        while len(self._marks) > self.max_calls:
            self._marks.popitem(last=False)

    def marker(self, call_sid: str) -> int | None:
        found = self._marks.get(call_sid)
        return None if found is None else found[1]

    def already_done(self, meta: AudioFrameMeta, pcm_bytes: int) -> bool:
        """Whether this frame's audio ends within what the call already published."""
        found = self._marks.get(meta.call_sid)
        if found is None or meta.sample_rate_hz <= 0:
            return False
        frame_ms = pcm_bytes * 1000 // (2 * meta.sample_rate_hz)
        if meta.offset_ms + frame_ms <= found[1]:
            self.skipped += 1
            return True
        return False

    def forget(self, partitions: set[int]) -> None:
        """Partitions went to another worker: their markers are rebuilt by the next owner."""
        for sid in [s for s, (p, _) in self._marks.items() if p in partitions]:
            del self._marks[sid]
