"""What a replayed call needs to cut the same utterances (so the same ids) as the first run.

An utterance's id is its start offset (``{call_sid}-{start_ms}``). After a crash or a rebalance
the next owner of the call's audio partition re-reads it from the committed offset with a new
front end and segmenter. Both have a bounded memory: the AGC's level looks back
``agc_memory_ms`` (:mod:`analytics.asr.frontend`) and a window's speech probability depends on
the last ``HISTORY_MS`` of audio (:mod:`analytics.asr.vad`). So once a replay has been given
:func:`lead_in_ms` of audio it scores every window as the first run did, and it finds the same
utterance starts:

* while no utterance is open the service acknowledges only frames that end at least the lead-in
  before the call's position (:class:`HeldFrames`), so the committed offset always leaves a
  replay that much audio before the next utterance it has to cut;
* a resumed call skips only the frames that end a lead-in before what its previous owner had
  finished (:mod:`analytics.asr.progress`), and opens no utterance before that point
  (:class:`analytics.asr.vad.ResumePoint`).

Plain classes, no I/O.
"""

from __future__ import annotations

from collections import deque

from analytics.asr.frontend import FrontEndConfig
from analytics.asr.ports import Done
from analytics.asr.vad import HISTORY_MS, WINDOW_MS, VadConfig
from schemas.records import AudioFrameMeta

#: the longest first frame a lead-in allows for (Exotel's are 100 ms)
FRAME_MARGIN_MS = 200


def lead_in_ms(front: FrontEndConfig, vad: VadConfig, model: bool = True) -> int:
    """Audio a replay needs before the first window it must score as the first run did: the
    AGC's memory, then the VAD model's history (the energy gate alone has none) or at least the
    speech pad, plus the replay's first frame and one window of slack."""
    agc = front.agc_memory_ms if front.agc else 0
    pad = max(1, -(-vad.speech_pad_ms // WINDOW_MS)) * WINDOW_MS
    return agc + max(HISTORY_MS if model else 0, pad) + FRAME_MARGIN_MS + WINDOW_MS


def frame_end_ms(meta: AudioFrameMeta, pcm_bytes: int) -> int:
    """Where a PCM16 frame's audio ends on the call's timeline."""
    rate = max(1, meta.sample_rate_hz)
    return meta.offset_ms + pcm_bytes * 1000 // (2 * rate)


class HeldFrames:
    """A call's frames not yet acknowledged, in order: (audio end in ms, acknowledgement).

    Owned by the call's :class:`analytics.asr.service.CallTranscriber`. Frames are released
    from the front only, so each frame is handled once: O(1) amortised per frame.
    """

    def __init__(self, lead_in_ms: int) -> None:
        self.lead_in_ms = lead_in_ms
        self._frames: deque[tuple[int, Done]] = deque()
        self._end_ms = 0  # where the last frame held ends

    def __len__(self) -> int:
        return len(self._frames)

    def hold(self, meta: AudioFrameMeta, pcm_bytes: int, done: Done) -> None:
        self._end_ms = frame_end_ms(meta, pcm_bytes)
        self._frames.append((self._end_ms, done))

    def release_lead_in(self) -> None:
        """No utterance is open: acknowledge the frames that end a lead-in before the last one."""
        self.release_until(self._end_ms - self.lead_in_ms)

    def release_until(self, end_ms: int) -> None:
        """Acknowledge the frames that end at or before ``end_ms``."""
        frames = self._frames
        while frames and frames[0][0] <= end_ms:
            frames.popleft()[1]()

    def release_all(self) -> None:
        frames, self._frames = self._frames, deque()
        for _, done in frames:
            done()
