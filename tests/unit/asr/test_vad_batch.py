"""The VAD batched across calls gives every call exactly what it gets alone: the same speech
probabilities to the bit, the same cuts, the same utterance ids (the real Silero model)."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analytics.asr.frontend import FrontEnd, FrontEndConfig
from analytics.asr.vad import (
    RATE_HZ,
    ResumePoint,
    Segmenter,
    SegmentResult,
    SileroVad,
    SpeechChunk,
    SpeechSegment,
    TentativeEnd,
    VadConfig,
    VadState,
)
from analytics.asr.vadbatch import VadBatcher, segment_many

pytestmark = pytest.mark.unit

CALLS = Path(__file__).resolve().parents[3] / "demo" / "calls"
NAMES = ["angry-caller", "asks-for-human", "collections-calm", "legal-threat", "interview-calm"]
CONFIG = VadConfig(min_silence_ms=400, speech_pad_ms=200, min_speech_ms=200, early_end_ms=200)
FRAME_BYTES = 1600  # 100 ms of 8 kHz PCM16, as Exotel sends
FRONT = FrontEndConfig(agc=True)


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad()


def pcm(name: str, seconds: int = 14) -> bytes:
    with wave.open(str(CALLS / f"{name}.wav"), "rb") as w:
        return w.readframes(w.getnframes())[: seconds * 16000]


def frames(data: bytes) -> list[bytes]:
    return [data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]


def described(result: SegmentResult) -> list[Any]:
    """A frame's result, comparable: every event with its position and audio."""
    out: list[Any] = [result.had_speech, result.in_speech]
    for event in result.events:
        seg = event.utterance if isinstance(event, TentativeEnd) else event
        if isinstance(seg, SpeechSegment):
            out.append((type(event).__name__, seg.start_ms, seg.end_ms, seg.keep))
            out.append(seg.audio.tobytes())
        elif isinstance(seg, SpeechChunk):
            out.append(("chunk", seg.utterance_start_ms, seg.audio.tobytes()))
    return out


def alone(vad: SileroVad, data: bytes, start_ms: int = 0) -> list[list[Any]]:
    segmenter = Segmenter(vad, CONFIG, start_ms, ResumePoint())
    front = FrontEnd(8000, FRONT, RATE_HZ)
    return [described(segmenter.feed(front.process(f, 8000))) for f in frames(data)]


def test_many_windows_through_many_states_equal_one_run_each(vad: SileroVad) -> None:
    rng = np.random.default_rng(3)
    groups = [(VadState(), VadState()) for _ in range(7)]
    twins = [(VadState(), VadState()) for _ in range(7)]
    for _ in range(20):  # 20 steps: the states carry over
        windows = [(rng.standard_normal(512) * 0.2).astype(np.float32) for _ in groups]
        together = vad.probabilities_many(windows, groups)
        one_by_one = np.concatenate(
            [vad.probabilities_each(w, states) for w, states in zip(windows, twins, strict=True)]
        )
        assert together.tobytes() == one_by_one.tobytes()
    for pair, twin in zip(groups, twins, strict=True):
        for state, other in zip(pair, twin, strict=True):
            assert state.h.tobytes() == other.h.tobytes()
            assert state.context.tobytes() == other.context.tobytes()


def test_calls_batched_in_any_mix_cut_what_they_cut_alone(vad: SileroVad) -> None:
    # calls of different lengths, one resumed mid-stream, batched in changing mixes
    calls = [pcm(name, 8 + 2 * i) for i, name in enumerate(NAMES)]
    starts = [0, 0, 0, 3_000, 0]
    expected = [alone(vad, data, start) for data, start in zip(calls, starts, strict=True)]
    segmenters = [Segmenter(vad, CONFIG, start, ResumePoint()) for start in starts]
    fronts = [FrontEnd(8000, FRONT, RATE_HZ) for _ in calls]
    queues = [frames(data) for data in calls]
    got: list[list[list[Any]]] = [[] for _ in calls]
    rng = np.random.default_rng(5)
    while any(queues):
        # a random subset of the calls with frames left, at most one frame each
        ready = [k for k, q in enumerate(queues) if q and rng.random() < 0.7] or [
            next(k for k, q in enumerate(queues) if q)
        ]
        jobs = [(segmenters[k], fronts[k], queues[k].pop(0), 8000) for k in ready]
        for k, result in zip(ready, segment_many(jobs), strict=True):
            assert isinstance(result, SegmentResult)
            got[k].append(described(result))
    assert got == expected
    assert any(any(len(r) > 2 for r in call) for call in expected)  # utterances were cut


class BrokenFrontEnd(FrontEnd):
    def process(self, pcm: bytes, rate_hz: int) -> Any:
        raise ValueError("unreadable frame")


def test_one_calls_bad_frame_fails_that_call_only(vad: SileroVad) -> None:
    data = pcm("asks-for-human", 4)
    good, bad = Segmenter(vad, CONFIG), Segmenter(vad, CONFIG)
    broken = BrokenFrontEnd(8000, FRONT, RATE_HZ)
    results = segment_many(
        [
            (good, FrontEnd(8000, FRONT, RATE_HZ), data[:FRAME_BYTES], 8000),
            (bad, broken, data[:FRAME_BYTES], 8000),
        ]
    )
    assert isinstance(results[0], SegmentResult)
    assert isinstance(results[1], ValueError)


async def test_the_batcher_batches_concurrent_calls_and_keeps_each_in_order(
    vad: SileroVad,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    calls = [pcm(name, 6) for name in NAMES]
    expected = [alone(vad, data) for data in calls]
    executor = ThreadPoolExecutor(max_workers=1)
    batcher = VadBatcher(executor)

    async def call(data: bytes) -> list[list[Any]]:
        segmenter, front = Segmenter(vad, CONFIG), FrontEnd(8000, FRONT, RATE_HZ)
        return [described(await batcher.segment(segmenter, front, f, 8000)) for f in frames(data)]

    try:
        got = await asyncio.gather(*(call(data) for data in calls))
    finally:
        executor.shutdown()
    assert list(got) == expected
    assert batcher.frames == sum(len(frames(d)) for d in calls)
    assert batcher.batches < batcher.frames / 2  # calls handed frames over together
