"""Flush at stop, watermark markers and urgent decoding (fake recogniser, fake clock, no broker)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from analytics.asr.decoder import BatchDecoder
from analytics.asr.service import TranscriptionService
from analytics.asr.vad import SpeechSegment
from schemas.records import DeadLetter, Transcript
from tests.helpers import async_wait_until
from tests.unit.asr.asr_fakes import FakeRecognizer, GatedRecognizer, call_pcm, silence
from tests.unit.asr.test_asr_service import FakeClock, acked_when_idle, feed, make_service

pytestmark = pytest.mark.unit


class OrderedSink:
    """Keeps every transcript and marker in publish order."""

    def __init__(self) -> None:
        self.records: list[Transcript] = []
        self.dead: list[DeadLetter] = []

    async def publish(self, transcript: Transcript) -> None:
        await asyncio.sleep(0)
        self.records.append(transcript)

    async def dead_letter(self, record: DeadLetter) -> None:
        self.dead.append(record)

    def utterances(self) -> list[str]:
        return [t.text for t in self.records if t.marker is None and t.is_final]

    def kinds(self) -> list[str]:
        return [t.marker or t.text for t in self.records if t.marker != "progress"]


async def _started(sink: OrderedSink, clock: FakeClock) -> TranscriptionService:
    service = make_service(FakeRecognizer(), sink, clock)  # type: ignore[arg-type]
    await service.start()
    return service


async def test_stop_flushes_the_open_utterance_at_once_then_marks_the_end() -> None:
    clock, sink, acked = FakeClock(), OrderedSink(), {}
    service = await _started(sink, clock)
    try:
        # the last words run right up to the stop: no trailing silence at all
        pcm = call_pcm([0.2]) + call_pcm([0.35], gap_ms=0)[: -2 * 300 * 8]
        n = feed(service, "CA1", pcm, acked, clock)
        await async_wait_until(lambda: sink.utterances() == ["amp 0.20"])
        service.on_stop("CA1", sequence_number=n + 1)  # Exotel: stop = last media + 1
        # no sweep, no clock move: the stop alone ends the call once its last frame is in
        await async_wait_until(lambda: "CA1" not in service.sessions)
        assert sink.kinds() == ["amp 0.20", "amp 0.35", "end"]
        end = sink.records[-1]
        assert end.marker == "end" and end.text == "" and not end.is_final
        assert end.end_ms >= sink.records[-2].end_ms
        assert len(acked["CA1"]) == n
    finally:
        await service.stop()


async def test_a_stop_read_before_the_audio_ends_the_call_after_its_last_frame() -> None:
    clock, sink, acked = FakeClock(), OrderedSink(), {}
    service = await _started(sink, clock)
    try:
        pcm = call_pcm([0.3], gap_ms=0)
        frames = len(pcm) // 1600
        service.on_stop("CA2", sequence_number=frames + 1)  # the calls topic ran ahead
        feed(service, "CA2", pcm, acked, clock)
        await async_wait_until(lambda: "CA2" not in service.sessions)
        assert sink.kinds() == ["amp 0.30", "end"]
    finally:
        await service.stop()


async def test_a_stop_waits_for_frames_still_on_their_way() -> None:
    clock, sink, acked = FakeClock(), OrderedSink(), {}
    service = await _started(sink, clock)
    try:
        pcm = call_pcm([0.3], gap_ms=0)
        first, rest = pcm[: 1600 * 5], pcm[1600 * 5 :]
        feed(service, "CA3", first, acked, clock)
        total = (len(first) + len(rest)) // 1600
        service.on_stop("CA3", sequence_number=total + 1)
        await async_wait_until(lambda: service.sessions["CA3"].last_sequence >= 5)
        await asyncio.sleep(0.05)  # let the stop check run behind the frames
        assert "CA3" in service.sessions  # frames 6.. not processed yet: not ended
        assert sink.kinds() == []
        feed_rest(service, "CA3", rest, acked, clock, first_seq=6)
        await async_wait_until(lambda: "CA3" not in service.sessions)
        assert sink.kinds() == ["amp 0.30", "end"]
    finally:
        await service.stop()


def feed_rest(
    service: TranscriptionService,
    call_sid: str,
    pcm: bytes,
    acked: dict[str, set[int]],
    clock: FakeClock,
    first_seq: int,
) -> None:
    from analytics.asr.audio import chunks
    from schemas.records import AudioFrameMeta

    for i, frame in enumerate(chunks(pcm, 8000, 100)):
        seq = first_seq + i
        meta = AudioFrameMeta(
            call_sid=call_sid,
            stream_sid=f"S-{call_sid}",
            sequence_number=seq,
            sample_rate_hz=8000,
            received_at_ms=int(clock.now * 1000) + seq * 100,
            offset_ms=(seq - 1) * 100,
        )
        service.on_frame(meta, frame, lambda s=seq: acked.setdefault(call_sid, set()).add(s))


async def test_silence_publishes_progress_markers_in_audio_time() -> None:
    from analytics.asr.audio import float_to_pcm16

    clock, sink, acked = FakeClock(), OrderedSink(), {}
    service = await _started(sink, clock)
    try:
        pcm = call_pcm([0.3], gap_ms=3500)
        pcm += float_to_pcm16(silence(1000))
        n = feed(service, "CA4", pcm, acked, clock)
        await async_wait_until(lambda: len(acked.get("CA4", ())) == acked_when_idle(service, n))
        progress = [t for t in sink.records if t.marker == "progress"]
        assert progress, "a silent stretch of audio must advance the watermark"
        offsets = [t.end_ms for t in progress]
        assert offsets == sorted(offsets)
        assert all(b - a >= 1000 for a, b in zip(offsets, offsets[1:], strict=False))
        utterance = next(t for t in sink.records if t.marker is None)
        # markers follow the utterance they cover, never precede it in the stream
        before = [t for t in progress if t.end_ms > utterance.end_ms]
        assert all(sink.records.index(t) > sink.records.index(utterance) for t in before)
        assert not any(utterance.start_ms < t.end_ms < utterance.end_ms for t in progress), (
            "no progress inside an open utterance"
        )
    finally:
        await service.stop()


async def test_urgent_decodes_go_ahead_of_queued_ones() -> None:
    recognizer = GatedRecognizer(max_batch=1)
    gate, order = recognizer.gate, recognizer.order
    executor = ThreadPoolExecutor(max_workers=1)
    decoder = BatchDecoder(recognizer, executor, slots=1)  # type: ignore[arg-type]
    decoder.start()
    audio = np.full(1600, 0.3, dtype=np.float32)
    try:
        stream = recognizer.open_stream()
        futures = [decoder.decode(stream, SpeechSegment(audio, i, i + 100)) for i in range(4)]
        await asyncio.sleep(0.05)  # the first is running, the rest wait
        urgent = decoder.decode(stream, SpeechSegment(audio, 99, 199), urgent=True)
        gate.set()
        await asyncio.wait_for(asyncio.gather(*futures, urgent), 10)
        assert order[1] == 99  # right after the one already running
    finally:
        await decoder.stop()
        executor.shutdown()
