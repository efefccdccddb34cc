"""CallProgress: which replayed frames a call already published (per call, not per partition),
and HeldFrames: which frames the service may acknowledge."""

from __future__ import annotations

from analytics.asr.markers import marker_transcript
from analytics.asr.progress import CallProgress
from analytics.asr.replay import HeldFrames
from analytics.asr.vad import ResumePoint
from schemas.records import AudioFrameMeta, Transcript

FRAME = 1600  # 100 ms of PCM16 at 8 kHz


def meta(call_sid: str, offset_ms: int) -> AudioFrameMeta:
    return AudioFrameMeta(
        call_sid=call_sid,
        stream_sid="S",
        sequence_number=offset_ms // 100 + 1,
        sample_rate_hz=8000,
        received_at_ms=0,
        offset_ms=offset_ms,
    )


def final(call_sid: str, start_ms: int, end_ms: int, is_final: bool = True) -> Transcript:
    return Transcript(
        call_sid=call_sid,
        utterance_id=f"{call_sid}-{start_ms}",
        utterance_index=start_ms,
        is_final=is_final,
        text="x",
        start_ms=start_ms,
        end_ms=end_ms,
        engine="fake",
        speech_end_at_ms=0,
        produced_at_ms=0,
        latency_ms=0.0,
    )


def test_frames_within_the_last_final_are_done_the_rest_are_not() -> None:
    progress = CallProgress()
    progress.note(final("A", 300, 1000), partition=3)
    progress.note(final("A", 1500, 2100), partition=3)
    progress.note(final("A", 2500, 9000, is_final=False), partition=3)  # a partial: not done
    assert progress.marker("A") == 2100
    assert progress.already_done(meta("A", 0), FRAME)
    assert progress.already_done(meta("A", 2000), FRAME)  # ends at 2100
    assert not progress.already_done(meta("A", 2100), FRAME)
    assert not progress.already_done(meta("B", 0), FRAME), "another call is not affected"
    assert progress.skipped == 2


def test_markers_of_revoked_partitions_are_forgotten_and_the_count_is_bounded() -> None:
    progress = CallProgress(max_calls=2)
    progress.note(final("A", 0, 500), partition=1)
    progress.note(final("B", 0, 500), partition=2)
    progress.forget({1})
    assert progress.marker("A") is None and progress.marker("B") == 500
    progress.note(final("C", 0, 500), partition=2)
    progress.note(final("D", 0, 500), partition=2)
    assert progress.marker("B") is None and progress.marker("D") == 500


def progress_marker(call_sid: str, audio_ms: int) -> Transcript:
    return marker_transcript(
        "progress",
        call_sid=call_sid,
        stream_sid="S",
        tenant="default",
        campaign="default",
        audio_ms=audio_ms,
        received_at_ms=0,
        produced_at_ms=0,
        engine="fake",
    )


def test_a_resumed_call_replays_a_lead_in_and_opens_after_what_was_published() -> None:
    progress = CallProgress(lead_in_ms=1000)
    assert progress.resume_point("A") == ResumePoint()  # nothing published: from the start
    progress.note(final("A", 300, 2100), partition=0)
    progress.note(progress_marker("A", 3200), partition=0)  # silent up to 3.2 s
    progress.note(final("A", 2500, 9000, is_final=False), partition=0)  # a partial: open
    assert progress.marker("A") == 3200
    # no utterance opens before 3.2 s; none is padded back past the last final's end
    assert progress.resume_point("A") == ResumePoint(floor_ms=2100, open_from_ms=3200)
    # frames are skipped only a lead-in before that: the new segmenter hears what it needs
    assert progress.already_done(meta("A", 2100), FRAME)  # ends at 2200
    assert not progress.already_done(meta("A", 2200), FRAME)
    progress.note(final("A", 3500, 4000), partition=0)
    assert progress.resume_point("A") == ResumePoint(floor_ms=4000, open_from_ms=4000)


def test_held_frames_go_in_order_and_keep_the_lead_in() -> None:
    acked: list[int] = []
    held = HeldFrames(lead_in_ms=250)
    for i in range(6):
        held.hold(meta("A", i * 100), FRAME, lambda i=i: acked.append(i))  # type: ignore[misc]
    held.release_lead_in()  # at 600 ms: frames ending by 350 ms
    assert acked == [0, 1, 2] and len(held) == 3
    held.release_lead_in()
    assert acked == [0, 1, 2]  # each frame once
    held.release_all()  # the call ended
    assert acked == [0, 1, 2, 3, 4, 5] and len(held) == 0
