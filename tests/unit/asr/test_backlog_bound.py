"""The backlog bound of the transcription service: what a call far behind real time sheds,
and how it says so.

Lag is now minus the time ingest read the frame being processed; the fake clock stands still
and each test sets the frames' receive times, so lag is exact. By default finals are never
shed: over the bound they say ``behind``; skipping (gap markers) is opt-in.
"""

from __future__ import annotations

import pytest

from analytics.asr.audio import chunks
from analytics.asr.progress import CallProgress
from analytics.asr.service import ServiceConfig, TranscriptionService
from analytics.asr.vad import ResumePoint, VadConfig
from schemas.records import AudioFrameMeta
from tests.helpers import async_wait_until
from tests.unit.asr.asr_fakes import FakeRecognizer, call_pcm
from tests.unit.asr.test_asr_service import FakeClock, FakeSink, acked_when_idle

pytestmark = pytest.mark.unit

SHED_MS, BOUND_MS = 2_000, 30_000


def make_service(
    recognizer: FakeRecognizer, sink: FakeSink, clock: FakeClock, bound_ms: int, skip: bool
) -> TranscriptionService:
    config = ServiceConfig(
        vad=VadConfig(min_silence_ms=300, speech_pad_ms=64, min_speech_ms=100, early_end_ms=100),
        executor_workers=2,
        sweep_interval_s=3600.0,
        shed_lag_ms=SHED_MS,
        max_lag_ms=bound_ms,
        skip_over_bound=skip,
    )
    return TranscriptionService(recognizer, sink, config, vad=None, clock=clock)


def feed(
    service: TranscriptionService,
    call_sid: str,
    pcm: bytes,
    acked: dict[str, set[int]],
    clock: FakeClock,
    lag_ms: list[int] | int,
    resume: ResumePoint | None = None,
) -> int:
    """Frames of 100 ms, frame i read by ingest ``lag_ms[i]`` before the (frozen) clock."""
    frames = chunks(pcm, 8000, 100)
    lags = lag_ms if isinstance(lag_ms, list) else [lag_ms] * len(frames)
    for i, frame in enumerate(frames):
        meta = AudioFrameMeta(
            call_sid=call_sid,
            stream_sid=f"S-{call_sid}",
            sequence_number=i + 1,
            sample_rate_hz=8000,
            received_at_ms=int(clock.now * 1000) - lags[i],
            offset_ms=i * 100,
        )

        def done(i: int = i) -> None:
            acked.setdefault(call_sid, set()).add(i * 100)

        service.on_frame(meta, frame, done, resume=resume)
    return len(frames)


async def run_call(
    recognizer: FakeRecognizer,
    lag_ms: list[int] | int,
    bound_ms: int = BOUND_MS,
    resume: ResumePoint | None = None,
    skip: bool = True,
) -> tuple[TranscriptionService, FakeSink]:
    clock, acked = FakeClock(), {}
    sink = FakeSink(acked)
    service = make_service(recognizer, sink, clock, bound_ms, skip)
    await service.start()
    try:
        n = feed(service, "CA1", call_pcm([0.2, 0.3, 0.4]), acked, clock, lag_ms, resume)
        idle = acked_when_idle(service, n)
        await async_wait_until(lambda: len(acked.get("CA1", ())) == idle, timeout=10)
    finally:
        await service.stop()
    return service, sink


def gaps(sink: FakeSink) -> list[tuple[int, int]]:
    return [(m.start_ms, m.end_ms) for m in sink.markers if m.marker == "gap"]


async def test_a_call_on_time_is_decoded_with_speculation() -> None:
    recognizer = FakeRecognizer()
    service, sink = await run_call(recognizer, lag_ms=50)
    assert sink.texts("CA1") == ["amp 0.20", "amp 0.30", "amp 0.40"]
    assert gaps(sink) == []
    assert service.decoder.speculative_started == 3 and service.speculative_behind == 0
    assert not any(t.behind for t in [*sink.transcripts, *sink.markers])


async def test_by_default_a_call_over_the_bound_is_decoded_and_says_it_is_behind() -> None:
    recognizer = FakeRecognizer()
    service, sink = await run_call(recognizer, lag_ms=60_000, skip=False)
    assert sink.texts("CA1") == ["amp 0.20", "amp 0.30", "amp 0.40"]  # finals never shed
    assert gaps(sink) == [] and service.gaps == 0
    assert all(t.behind for t in sink.transcripts)
    assert sink.markers and all(m.behind for m in sink.markers)  # progress markers too
    assert service.decoder.speculative_started == 0  # speculation shed


async def test_between_the_shed_lag_and_the_bound_nothing_says_behind() -> None:
    recognizer = FakeRecognizer()
    service, sink = await run_call(recognizer, lag_ms=5_000, skip=False)
    assert sink.texts("CA1") == ["amp 0.20", "amp 0.30", "amp 0.40"]
    assert not any(t.behind for t in sink.transcripts)


async def test_over_the_shed_lag_speculation_goes_but_every_utterance_is_decoded() -> None:
    recognizer = FakeRecognizer()
    service, sink = await run_call(recognizer, lag_ms=5_000)
    assert sink.texts("CA1") == ["amp 0.20", "amp 0.30", "amp 0.40"]
    assert gaps(sink) == []
    assert service.decoder.speculative_started == 0
    assert service.speculative_behind == 3


async def test_skipping_over_the_bound_publishes_utterances_as_gaps_not_decoded() -> None:
    recognizer = FakeRecognizer()
    service, sink = await run_call(recognizer, lag_ms=60_000)
    assert sink.transcripts == []
    assert recognizer.batches == []  # nothing decoded
    spans = gaps(sink)
    assert len(spans) == 3 == service.gaps
    # each gap is where its utterance would have been, in order, and marks no text
    assert all(start < end for start, end in spans) and spans == sorted(spans)
    marker = next(m for m in sink.markers if m.marker == "gap")
    assert marker.text == "" and not marker.is_final
    assert marker.utterance_index == marker.start_ms  # the index its transcript would have had
    assert marker.behind


async def test_without_a_bound_a_call_far_behind_is_still_decoded() -> None:
    recognizer = FakeRecognizer()
    service, sink = await run_call(recognizer, lag_ms=60_000, bound_ms=0)
    assert sink.texts("CA1") == ["amp 0.20", "amp 0.30", "amp 0.40"]
    assert gaps(sink) == []


async def test_a_call_that_caught_up_is_decoded_again() -> None:
    # frames of the first utterance are 60 s late, then the call is live again
    recognizer = FakeRecognizer()
    pcm = call_pcm([0.2, 0.3, 0.4])
    n = len(chunks(pcm, 8000, 100))
    lags = [60_000 if i < 15 else 100 for i in range(n)]
    service, sink = await run_call(recognizer, lag_ms=lags)
    assert len(gaps(sink)) == 1
    assert sink.texts("CA1") == ["amp 0.30", "amp 0.40"]
    assert not service.sessions  # state dropped at the end as usual


async def test_a_resumed_calls_lead_in_is_old_by_design_not_lag() -> None:
    # a successor re-reads the audio its predecessor published (here up to 1.6 s, the first
    # utterance) to rebuild the VAD's state: those frames are a minute old, the rest live
    recognizer = FakeRecognizer()
    pcm = call_pcm([0.2, 0.3, 0.4])
    n = len(chunks(pcm, 8000, 100))
    lags = [60_000 if i < 16 else 10_000 for i in range(n)]  # live: under the bound
    resume = ResumePoint(floor_ms=1_600, open_from_ms=1_600)
    service, sink = await run_call(recognizer, lag_ms=lags, resume=resume)
    assert gaps(sink) == [] and not service.sessions
    assert sink.texts("CA1") == ["amp 0.30", "amp 0.40"]


async def test_between_shed_and_bound_a_call_catching_up_keeps_publishing_gaps() -> None:
    # over the bound, then 10 s behind: still catching up (the way back is under the shed lag)
    recognizer = FakeRecognizer()
    pcm = call_pcm([0.2, 0.3, 0.4])
    n = len(chunks(pcm, 8000, 100))
    lags = [60_000 if i < 15 else 10_000 for i in range(n)]
    service, sink = await run_call(recognizer, lag_ms=lags)
    assert len(gaps(sink)) == 3 and sink.transcripts == []


async def test_a_streaming_recogniser_behind_publishes_finals_but_no_partials() -> None:
    recognizer = FakeRecognizer(streaming=True)
    service, sink = await run_call(recognizer, lag_ms=60_000)
    assert sink.texts("CA1", final=False) == []
    assert service.partials_shed > 0
    assert sink.texts("CA1") == ["amp 0.20", "amp 0.30", "amp 0.40"]
    assert gaps(sink) == []  # a streaming recogniser decoded the utterance as it came


async def test_a_streaming_recogniser_on_time_publishes_partials() -> None:
    recognizer = FakeRecognizer(streaming=True)
    service, sink = await run_call(recognizer, lag_ms=50)
    assert sink.texts("CA1", final=False) and service.partials_shed == 0


def test_a_gap_counts_as_a_cut_utterance_for_resuming() -> None:
    from analytics.asr.markers import marker_transcript

    progress = CallProgress(lead_in_ms=0)
    gap = marker_transcript(
        "gap",
        call_sid="CA1",
        stream_sid="S",
        tenant="t",
        campaign="c",
        audio_ms=4_000,
        start_ms=2_500,
        received_at_ms=0,
        produced_at_ms=0,
        engine="fake",
    )
    progress.note(gap, 0)
    assert progress.marker("CA1") == 4_000
    # as after a final: no utterance of a resumed session opens or pads back into the gap
    assert progress.resume_point("CA1") == ResumePoint(floor_ms=4_000, open_from_ms=4_000)
