"""Per-call ASR progress: how far into each call's audio everything is published.

The audio agent commits offsets in offset order per partition, across calls (a frame is
committed only once every earlier frame of its partition is done), so a worker that takes a
partition over re-reads calls other than the oldest open one from mid-call. This marker lets it
skip, per call, the frames whose audio is already covered by published transcripts: each call
resumes where it left off, and its replayed audio is not transcribed again.

The marker is rebuilt from ``agentstream.transcripts`` (co-partitioned with the audio by call
SID) when a partition is assigned (:mod:`analytics.resume`): the end (``end_ms``, the call's
audio timeline, as ``AudioFrameMeta.offset_ms``) of the call's last final transcript or of its
last ``progress``/``end`` marker, whichever is later; the previous owner had no utterance open
there and had published every one before. A frame is skipped only if it ends a lead-in
(:func:`analytics.asr.replay.lead_in_ms`) before the marker: the audio after that only brings
the new segmenter's state to where the previous owner's was, and no utterance opens before the
marker (:meth:`CallProgress.resume_point`), so the next utterance gets the same start, hence
the same id. Plain class, no I/O.
"""

from __future__ import annotations

from collections import OrderedDict

from analytics.asr.replay import frame_end_ms
from analytics.asr.vad import ResumePoint
from schemas.records import AudioFrameMeta, Transcript

MAX_CALLS = 200_000  # markers kept (least recently updated dropped first)


class CallProgress:
    """Markers of the calls on this worker's partitions (see module docstring)."""

    def __init__(self, max_calls: int = MAX_CALLS, lead_in_ms: int = 0) -> None:
        self.max_calls = max_calls
        self.lead_in_ms = lead_in_ms
        # sid -> (partition, end of the last final, end of everything published)
        self._marks: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        self.skipped = 0

    def note(self, transcript: Transcript, partition: int) -> None:
        """A transcript was published (or read back): finals and markers tell what is done."""
        # a gap is an utterance cut and done, like a final, only not decoded
        final = (transcript.is_final and transcript.marker is None) or transcript.marker == "gap"
        if not final and transcript.marker is None:
            return  # a partial: its utterance may still be open
        _, floor, done = self._marks.get(transcript.call_sid, (partition, -1, -1))
        if final:
            floor = max(floor, transcript.end_ms)
        self._marks[transcript.call_sid] = (partition, floor, max(done, transcript.end_ms))
        self._marks.move_to_end(transcript.call_sid)
        while len(self._marks) > self.max_calls:
            self._marks.popitem(last=False)

    def marker(self, call_sid: str) -> int | None:
        found = self._marks.get(call_sid)
        return None if found is None else found[2]

    def resume_point(self, call_sid: str) -> ResumePoint:
        """Where a new session of the call may open utterances and pad them back to."""
        found = self._marks.get(call_sid)
        if found is None:
            return ResumePoint()
        return ResumePoint(floor_ms=max(0, found[1]), open_from_ms=found[2])

    def already_done(self, meta: AudioFrameMeta, pcm_bytes: int) -> bool:
        """Whether this frame's audio ends a lead-in before what the call already published."""
        found = self._marks.get(meta.call_sid)
        if found is None or meta.sample_rate_hz <= 0:
            return False
        if frame_end_ms(meta, pcm_bytes) <= found[2] - self.lead_in_ms:
            self.skipped += 1
            return True
        return False

    def forget(self, partitions: set[int]) -> None:
        """Partitions went to another worker: their markers are rebuilt by the next owner."""
        for sid in [s for s, (p, _, _) in self._marks.items() if p in partitions]:
            del self._marks[sid]
