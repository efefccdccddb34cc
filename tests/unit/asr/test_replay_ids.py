"""A worker killed at any point of a call: its successor cuts the call's next utterances with the
same starts, so the same ids, as the worker that ran the whole call (real Silero VAD, real speech).

The call is a real telephone recording (Harvard sentences read over an 8 kHz line, 35 s, eleven
utterances, pauses of 0.2 to 1.5 s) sent as 100 ms PCM16 frames through the worker's front end
(streaming resampler, AGC) and segmenter. The first run applies the service's acknowledgement rule
(:class:`analytics.asr.replay.HeldFrames`) and publishes what the service would (finals, progress
markers). A kill is simulated after every frame, with the three states a kill can leave around a
frame: its acknowledgements not yet made, its final not yet published, or both done. The
successor re-reads the call from the committed offset, skips and resumes exactly as the worker
does (:class:`analytics.asr.progress.CallProgress` rebuilt from what was published), and must
cut the utterances not yet published with the first run's starts and ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from analytics.asr.audio import float_to_pcm16, read_audio
from analytics.asr.frontend import FrontEnd, FrontEndConfig
from analytics.asr.progress import CallProgress
from analytics.asr.replay import HeldFrames, lead_in_ms
from analytics.asr.vad import RATE_HZ, ResumePoint, Segmenter, SileroVad, SpeechSegment, VadConfig
from schemas.records import AudioFrameMeta
from tests.unit.asr.test_asr_progress import final, progress_marker

pytestmark = [pytest.mark.unit, pytest.mark.slow]

SPEECH = Path(__file__).resolve().parents[4] / "shared" / "data" / "speech"
CALL = SPEECH / "audio" / "osr_us_000_0034_8k.flac"
FRAME_MS = 100
VAD = VadConfig(early_end_ms=200)  # the worker's defaults
FRONT = FrontEndConfig(agc=True)
PROGRESS_MS = 1000


@dataclass
class Run:
    """What one worker did with the call from ``first`` on, frame by frame."""

    finals: list[tuple[int, int, int]] = field(default_factory=list)  # (frame, start, end)
    markers: list[tuple[int, int]] = field(default_factory=list)  # (frame, audio ms)
    committed: list[int] = field(default_factory=list)  # first frame not acked, after each frame


def meta(frame: int) -> AudioFrameMeta:
    return AudioFrameMeta(
        call_sid="CA1",
        stream_sid="S1",
        sequence_number=frame + 1,
        sample_rate_hz=8000,
        received_at_ms=0,
        offset_ms=frame * FRAME_MS,
    )


def run(
    vad: SileroVad,
    frames: list[bytes],
    first: int = 0,
    resume: ResumePoint | None = None,
    finals: int | None = None,
) -> Run:
    """The service's per-frame loop (``CallTranscriber._run``) without a recogniser: segment,
    publish progress while no utterance is open, acknowledge all but the lead-in."""
    segmenter = Segmenter(vad, VAD, first * FRAME_MS, resume)
    front = FrontEnd(8000, FRONT, RATE_HZ)
    held = HeldFrames(lead_in_ms(FRONT, VAD))
    acked: set[int] = set()
    out = Run()
    progress_ms = max(first * FRAME_MS, resume.open_from_ms if resume else 0)
    for f in range(first, len(frames)):
        held.hold(meta(f), len(frames[f]), lambda f=f: acked.add(f))  # type: ignore[misc]
        for event in segmenter.feed(front.process(frames[f], 8000)).events:
            if isinstance(event, SpeechSegment) and event.keep:
                out.finals.append((f, event.start_ms, event.end_ms))
        if not segmenter.in_speech:
            if segmenter.position_ms - progress_ms >= PROGRESS_MS:
                progress_ms = segmenter.position_ms
                out.markers.append((f, progress_ms))
            held.release_lead_in()
        out.committed.append(next((g for g in range(first, f + 1) if g not in acked), f + 1))
        if finals is not None and len(out.finals) >= finals:
            break
    return out


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    pcm = float_to_pcm16(read_audio(CALL, 8000)[0])
    size = 8000 * FRAME_MS // 1000 * 2
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def test_a_successor_cuts_every_unpublished_utterance_with_the_same_start(
    frames: list[bytes],
) -> None:
    vad = SileroVad()
    first = run(vad, frames)
    assert len(first.finals) >= 10, first.finals
    lead_in = lead_in_ms(FRONT, VAD)
    kills = set()
    for k in range(len(frames)):
        before = first.committed[k - 1] if k else 0
        kills.add((first.committed[k], k))  # frame k done and acknowledged
        kills.add((before, k))  # frame k's final and markers out, its acks not made
        kills.add((before, k - 1))  # frame k's final not out yet
    resumes: dict[tuple[int, ResumePoint, int], tuple[int, int]] = {}
    for committed, published_to in sorted(kills):
        published = [u for u in first.finals if u[0] <= published_to]
        if len(published) == len(first.finals):
            continue  # nothing left to cut
        progress_of = CallProgress(lead_in_ms=lead_in)
        for _, start, end in published:
            progress_of.note(final("CA1", start, end), partition=0)
        for _, audio_ms in (m for m in first.markers if m[0] <= published_to):
            progress_of.note(progress_marker("CA1", audio_ms), partition=0)
        resume_at = committed  # the worker's skip, then the new session's resume point
        while resume_at < len(frames) and progress_of.already_done(
            meta(resume_at), len(frames[resume_at])
        ):
            resume_at += 1
        point = progress_of.resume_point("CA1")
        resumes[(resume_at, point, len(published))] = (committed, published_to)
    assert len(resumes) > 40  # resumed in the silence, mid-utterance, before and after finals
    for (resume_at, point, done), kill in resumes.items():
        expected = [u[1:] for u in first.finals[done : done + 2]]
        again = run(vad, frames, resume_at, point, finals=len(expected))
        got = [u[1:] for u in again.finals[: len(expected)]]
        assert got == expected, (kill, resume_at, point)


def test_the_lead_in_is_what_a_replay_needs_and_no_more() -> None:
    # AGC memory, the VAD's history, the first frame and a window of slack
    assert lead_in_ms(FRONT, VAD) == 2_000 + 10_240 + 200 + 32
    assert lead_in_ms(FrontEndConfig(agc=False), VAD) == 10_240 + 232
    # the energy gate alone remembers nothing: the speech pad is all a replay needs
    assert lead_in_ms(FrontEndConfig(agc=False), VAD, model=False) == 224 + 232
    assert np.isfinite(lead_in_ms(FRONT, VAD))
