"""The transcription service with a fake recogniser and a fake sink (no broker, no model)."""

from __future__ import annotations

import asyncio

import pytest

from analytics.asr.audio import chunks
from analytics.asr.ports import Redaction, Rereading, never_rereading
from analytics.asr.service import ServiceConfig, TranscriptionService
from analytics.asr.vad import VadConfig
from schemas.records import AudioFrameMeta, DeadLetter, Transcript
from tests.helpers import async_wait_until
from tests.unit.asr.asr_fakes import FakeRecognizer, call_pcm

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeSink:
    def __init__(self, acked: dict[str, set[int]] | None = None) -> None:
        self.transcripts: list[Transcript] = []
        self.dead: list[DeadLetter] = []
        self.acked = acked if acked is not None else {}
        self.acked_at_publish: list[set[int]] = []
        self.markers: list[Transcript] = []

    async def publish(self, transcript: Transcript) -> None:
        await asyncio.sleep(0)
        if transcript.marker is not None:
            self.markers.append(transcript)  # watermarks: tested in test_asr_stop.py
            return
        self.acked_at_publish.append(set(self.acked.get(transcript.call_sid, set())))
        self.transcripts.append(transcript)

    async def dead_letter(self, record: DeadLetter) -> None:
        self.dead.append(record)

    def texts(self, call_sid: str, final: bool = True) -> list[str]:
        return [t.text for t in self.transcripts if t.call_sid == call_sid and t.is_final == final]


def make_service(
    recognizer: FakeRecognizer,
    sink: FakeSink,
    clock: FakeClock,
    workers: int = 2,
    rereading: Rereading = never_rereading,
) -> TranscriptionService:
    config = ServiceConfig(
        vad=VadConfig(min_silence_ms=300, speech_pad_ms=64, min_speech_ms=100, early_end_ms=100),
        executor_workers=workers,
        idle_timeout_s=30.0,
        stop_grace_s=1.0,
        sweep_interval_s=3600.0,
    )
    return TranscriptionService(
        recognizer, sink, config, vad=None, clock=clock, rereading=rereading
    )


def acked_when_idle(service: TranscriptionService, frames: int, frame_ms: int = 100) -> int:
    """Frames acknowledged once a call that ends in silence is processed: all but those ending
    within the lead-in before its end, held for a replay until the call ends."""
    end_ms = frames * frame_ms
    return sum(1 for i in range(frames) if (i + 1) * frame_ms <= end_ms - service.lead_in_ms)


def feed(
    service: TranscriptionService,
    call_sid: str,
    pcm: bytes,
    acked: dict[str, set[int]],
    clock: FakeClock,
    tenant: str = "default",
) -> int:
    frames = chunks(pcm, 8000, 100)
    for i, frame in enumerate(frames):
        meta = AudioFrameMeta(
            call_sid=call_sid,
            stream_sid=f"S-{call_sid}",
            tenant=tenant,
            sequence_number=i + 1,
            sample_rate_hz=8000,
            received_at_ms=int(clock.now * 1000) + i * 100,
            offset_ms=i * 100,
        )

        def done(i: int = i) -> None:
            acked.setdefault(call_sid, set()).add(i * 100)

        service.on_frame(meta, frame, done)
    return len(frames)


async def test_one_call_in_order_and_acked_only_after_publish() -> None:
    clock, acked = FakeClock(), {}
    sink = FakeSink(acked)
    recognizer = FakeRecognizer()
    service = make_service(recognizer, sink, clock)
    await service.start()
    try:
        n = feed(service, "CA1", call_pcm([0.2, 0.3, 0.4]), acked, clock)
        idle = acked_when_idle(service, n)
        await async_wait_until(lambda: len(acked.get("CA1", ())) == idle, timeout=10)
        assert sink.texts("CA1") == ["amp 0.20", "amp 0.30", "amp 0.40"]
        # the lead-in before the call's position stays unacknowledged (a replay needs it)
        await asyncio.sleep(0.05)
        assert 0 < n - len(acked["CA1"]) == -(-service.lead_in_ms // 100)
        starts = [t.start_ms for t in sink.transcripts]
        assert starts == sorted(starts)
        for transcript, acked_then in zip(sink.transcripts, sink.acked_at_publish, strict=True):
            # no frame inside the utterance was acknowledged before its transcript was published
            inside = {o for o in acked_then if transcript.start_ms <= o < transcript.end_ms - 100}
            assert not inside, (transcript.text, sorted(inside))
            assert transcript.engine == "fake"
            assert transcript.stream_sid == "S-CA1"
            assert transcript.utterance_id == f"CA1-{transcript.start_ms}"
            assert transcript.latency_ms == transcript.produced_at_ms - transcript.speech_end_at_ms
        # tone bursts start at 300, 1600, 2900 ms (600 ms speech + 700 ms gaps)
        base_ms = int(clock.now * 1000)
        for transcript, expected in zip(sink.transcripts, (300, 1600, 2900), strict=True):
            assert abs(transcript.start_ms - expected) <= 100
            assert abs(transcript.end_ms - (expected + 600)) <= 100
            # speech end = ingest receipt of the frame holding the last speech (received_at_ms)
            last_speech_frame_ms = (expected + 600 - 1) // 100 * 100
            assert 0 <= transcript.speech_end_at_ms - base_ms - last_speech_frame_ms <= 100
        assert recognizer.warmed and len(recognizer.warmed) == 2  # one per inference thread
        # each decode started at the first 100 ms of silence and was used as the final result
        assert service.decoder.speculative_started == service.speculative_used == 3
        assert recognizer.batches == [1, 1, 1]
        service.on_stop("CA1", sequence_number=n + 1)
        await async_wait_until(lambda: len(acked["CA1"]) == n)  # the call ended: all of it
    finally:
        await service.stop()


async def test_concurrent_calls_batched_and_independent() -> None:
    clock, acked = FakeClock(), {}
    sink = FakeSink(acked)
    # a pass takes 50 ms, so utterances finishing meanwhile wait and share the next pass
    recognizer = FakeRecognizer(max_batch=8, delay_s=0.05)
    service = make_service(recognizer, sink, clock, workers=1)
    await service.start()
    try:
        calls = {f"CA{i}": [0.1 + 0.05 * (i % 5), 0.5, 0.25] for i in range(8)}
        total = sum(
            acked_when_idle(service, feed(service, sid, call_pcm(amps), acked, clock))
            for sid, amps in calls.items()
        )
        await async_wait_until(lambda: sum(len(v) for v in acked.values()) == total, timeout=15)
        for sid, amps in calls.items():
            assert sink.texts(sid) == [f"amp {a:.2f}" for a in amps], sid
        assert max(recognizer.batches) > 1, recognizer.batches  # utterances shared a pass
    finally:
        await service.stop()


async def test_model_error_dead_letters_that_call_only() -> None:
    clock, acked = FakeClock(), {}
    sink = FakeSink(acked)
    service = make_service(FakeRecognizer(max_batch=1), sink, clock)
    await service.start()
    try:
        n1 = acked_when_idle(service, feed(service, "BAD", call_pcm([0.9, 0.3]), acked, clock))
        n2 = acked_when_idle(service, feed(service, "GOOD", call_pcm([0.2]), acked, clock))
        await async_wait_until(
            lambda: len(acked.get("BAD", ())) == n1 and len(acked.get("GOOD", ())) == n2
        )
        assert [d.call_sid for d in sink.dead] == ["BAD"]
        assert sink.dead[0].stage == "asr" and "fake model error" in sink.dead[0].error
        assert sink.texts("GOOD") == ["amp 0.20"]
        assert sink.texts("BAD") == ["amp 0.30"]  # the call goes on after the error
        assert service.errors == 1
    finally:
        await service.stop()


async def test_stop_flushes_open_utterance_and_drops_state() -> None:
    clock, acked = FakeClock(), {}
    sink = FakeSink(acked)
    recognizer = FakeRecognizer()
    service = make_service(recognizer, sink, clock)
    await service.start()
    try:
        pcm = call_pcm([0.2]) + call_pcm([0.35], gap_ms=0)  # ends mid-speech
        n = feed(service, "CA1", pcm, acked, clock)
        await async_wait_until(lambda: sink.texts("CA1") == ["amp 0.20"])
        assert len(acked["CA1"]) < n  # the open utterance's frames are held
        assert "CA1" in service.sessions
        service.on_stop("CA1")
        service.sweep()
        assert "CA1" in service.sessions  # grace period for late frames
        clock.now += 1.5
        service.sweep()
        await async_wait_until(lambda: "CA1" not in service.sessions)
        assert sink.texts("CA1") == ["amp 0.20", "amp 0.35"]
        assert len(acked["CA1"]) == n
        assert recognizer.closed == 1
        assert service.calls_ended == 1
    finally:
        await service.stop()


async def test_idle_timeout_drops_state() -> None:
    clock, acked = FakeClock(), {}
    sink = FakeSink(acked)
    service = make_service(FakeRecognizer(), sink, clock)
    await service.start()
    try:
        for i in range(20):
            feed(service, f"CA{i}", call_pcm([0.2]), acked, clock)
        await async_wait_until(lambda: len(sink.transcripts) == 20)
        clock.now += 10
        service.sweep()
        assert len(service.sessions) == 20
        clock.now += 25
        service.sweep()
        await async_wait_until(lambda: not service.sessions)
        assert service.calls_ended == 20
    finally:
        await service.stop()


async def test_partials_redaction_and_tenant() -> None:
    clock, acked = FakeClock(), {}
    sink = FakeSink(acked)

    def redact(tenant: str, campaign: str, text: str) -> Redaction:
        if tenant != "acme" or "0.20" not in text:
            return Redaction(text, [])
        at = text.index("0.20")
        return Redaction(text.replace("0.20", "[CARD]"), ["CARD"], [(at, at + 4, "CARD")])

    def language(tenant: str, campaign: str) -> str | None:
        return "hi" if (tenant, campaign) == ("acme", "default") else None

    config = ServiceConfig(vad=VadConfig(min_silence_ms=300, speech_pad_ms=64), sweep_interval_s=60)
    recognizer = FakeRecognizer(streaming=True)
    service = TranscriptionService(
        recognizer, sink, config, vad=None, redact=redact, language=language, clock=clock
    )
    await service.start()
    try:
        n = feed(service, "CA1", call_pcm([0.2]), acked, clock, tenant="acme")
        await async_wait_until(lambda: len(acked.get("CA1", ())) == acked_when_idle(service, n))
        partials = [t for t in sink.transcripts if not t.is_final]
        finals = [t for t in sink.transcripts if t.is_final]
        assert partials and all(p.utterance_id == finals[0].utterance_id for p in partials)
        assert sink.transcripts.index(partials[-1]) < sink.transcripts.index(finals[0])
        assert finals[0].text == "amp [CARD]" and finals[0].pii_kinds == ["CARD"]
        assert finals[0].tenant == "acme"
        # the redacted word keeps its timing, its text is the placeholder
        assert [w.word for w in finals[0].words] == ["amp", "[CARD]"]
        assert finals[0].words[1].end_ms == finals[0].end_ms
        # the call's stream was opened in the tenant's language, reported on the transcript
        assert recognizer.languages == ["hi"] and finals[0].language == "hi"
    finally:
        await service.stop()


async def test_dropped_calls_leave_no_frames_counted_against_capacity() -> None:
    clock, acked = FakeClock(), {}
    sink = FakeSink(acked)
    service = make_service(FakeRecognizer(), sink, clock)
    await service.start()
    try:
        for sid, partition in (("CA1", 1), ("CA2", 2)):
            frames = chunks(call_pcm([0.2, 0.3, 0.4]), 8000, 100)
            for i, frame in enumerate(frames):
                meta = AudioFrameMeta(
                    call_sid=sid,
                    stream_sid=f"S-{sid}",
                    sequence_number=i + 1,
                    sample_rate_hz=8000,
                    received_at_ms=int(clock.now * 1000) + i * 100,
                    offset_ms=i * 100,
                )
                service.on_frame(meta, frame, lambda: None, partition)
        assert service.queued > 0
        # A rebalance takes both partitions away before their frames were processed: nothing
        # was acknowledged, and the dropped frames must not hold the consumer back afterwards.
        assert service.drop_partitions({1, 2}) == 2
        await async_wait_until(lambda: service.calls_ended == 2, timeout=10)  # tasks wound down
        assert not acked
        assert service.queued == 0
    finally:
        await service.stop()
