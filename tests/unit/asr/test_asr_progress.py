"""CallProgress: which replayed frames a call already published (per call, not per partition)."""

from __future__ import annotations

from analytics.asr.progress import CallProgress
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
