"""Utterance ids come from audio position: a worker resuming a call mid-stream cuts the same ids."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.asr.vad import RATE_HZ, ResumePoint, Segmenter, SpeechSegment, VadConfig

pytestmark = pytest.mark.unit

FRAME = RATE_HZ // 10  # 100 ms frames, as Exotel sends them


def call_audio() -> np.ndarray:
    """Three tone bursts ("utterances") with silences of uneven, non-window-multiple lengths."""
    rng = np.random.default_rng(7)
    parts = []
    for silence_ms, speech_ms in ((530, 1210), (1370, 930), (1110, 1650), (900, 0)):
        parts.append(np.zeros(silence_ms * RATE_HZ // 1000, dtype=np.float32))
        t = np.arange(speech_ms * RATE_HZ // 1000) / RATE_HZ
        tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.shape[0])
        parts.append(tone.astype(np.float32))
    return np.concatenate(parts)


CONFIG = VadConfig(min_silence_ms=400, speech_pad_ms=200, min_speech_ms=200)


def utterances(
    audio: np.ndarray, first_frame: int = 0, resume: ResumePoint | None = None
) -> list[tuple[int, int]]:
    """(start, end) of the utterances a segmenter that starts at ``first_frame`` cuts."""
    segmenter = Segmenter(None, CONFIG, first_frame * 100, resume)
    found: list[tuple[int, int]] = []
    for f in range(first_frame, -(-audio.shape[0] // FRAME)):
        for event in segmenter.feed(audio[f * FRAME : (f + 1) * FRAME]).events:
            if isinstance(event, SpeechSegment) and event.keep:
                found.append((event.start_ms, event.end_ms))
    if (last := segmenter.flush()) is not None and last.keep:
        found.append((last.start_ms, last.end_ms))
    return found


def starts(audio: np.ndarray, first_frame: int) -> list[int]:
    """Utterance start offsets cut by a segmenter that starts at ``first_frame`` (a replay)."""
    return [start for start, _ in utterances(audio, first_frame)]


def test_a_replay_from_any_frame_in_the_silence_before_an_utterance_cuts_the_same_ids() -> None:
    audio = call_audio()
    original = starts(audio, 0)
    assert len(original) == 3
    # a restarted worker resumes at the first frame not yet acknowledged: any frame boundary
    # at least the speech pad (200 ms) before the utterance it re-cuts
    for resume in range(1, audio.shape[0] // FRAME):
        later = [s for s in original if s >= resume * 100 + 200]
        assert [s for s in starts(audio, resume) if s >= resume * 100 + 200] == later, resume


def test_the_window_grid_is_anchored_at_the_stream_start() -> None:
    segmenter = Segmenter(None, VadConfig(), start_ms=1000)  # 16000 samples: not a grid line
    assert segmenter.position_ms == 1024  # the next multiple of 32 ms
    segmenter.feed(np.zeros(FRAME, dtype=np.float32))
    assert segmenter.position_ms == 1088  # 1000 + 100 ms fed, in whole windows


def test_a_resumed_call_opens_nothing_before_its_resume_point() -> None:
    audio = call_audio()
    first, *rest = utterances(audio)
    assert first[0] < 1000 < first[1]
    # resumed at 1 s, inside the first utterance: cut again, it would be a shorter duplicate
    assert utterances(audio, 10)[0][0] >= 1000
    # published (the progress marker is its end): only the utterances after it are cut
    assert utterances(audio, 10, ResumePoint(floor_ms=first[1], open_from_ms=first[1])) == rest


def tones(*parts_ms: int) -> np.ndarray:
    """Alternating silence and 220 Hz tone, starting with silence (16 kHz)."""
    out = []
    for i, ms in enumerate(parts_ms):
        t = np.arange(ms * RATE_HZ // 1000) / RATE_HZ
        out.append(0.3 * np.sin(2 * np.pi * 220 * t) * (i % 2))
    return np.concatenate(out).astype(np.float32)


def test_the_pad_reaches_back_to_the_previous_utterances_end_not_its_close() -> None:
    # 450 ms between the tones: the first closes after 400 ms of it, the second's 224 ms pad
    # would reach back into the first's end pad
    (_, end), (start, _) = utterances(tones(500, 800, 450, 800, 600))
    assert end == start  # not where the first one was closed: a replay knows its end
    assert 1300 + 200 <= end <= 1300 + 200 + 32  # its last speech window, padded
