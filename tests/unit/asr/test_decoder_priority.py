"""Speculation waits its turn: a speculative decode is queued behind every final, taken only
while no final waits, promoted to a final where it stands when the end of speech is confirmed;
waiting utterances are shared over the free inference threads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np
from prometheus_client import CollectorRegistry

from analytics.asr.base import RecognizerStream
from analytics.asr.decoder import BatchDecoder
from analytics.asr.vad import SpeechSegment
from analytics.metrics import DecodeCollector
from tests.helpers import async_wait_until
from tests.unit.asr.asr_fakes import GatedRecognizer

AUDIO = np.full(1600, 0.3, dtype=np.float32)


def utt(start_ms: int) -> SpeechSegment:
    return SpeechSegment(AUDIO, start_ms, start_ms + 100)


@asynccontextmanager
async def gated(
    slots: int = 1, max_batch: int = 1, started: bool = True
) -> AsyncIterator[tuple[BatchDecoder, GatedRecognizer, RecognizerStream]]:
    """A decoder whose batches wait for ``recognizer.gate``; ``order``: utterance starts."""
    recognizer = GatedRecognizer(max_batch=max_batch)
    executor = ThreadPoolExecutor(max_workers=slots)
    decoder = BatchDecoder(recognizer, executor, slots=slots)  # type: ignore[arg-type]
    if started:
        decoder.start()
    try:
        yield decoder, recognizer, recognizer.open_stream()
    finally:
        recognizer.gate.set()
        await decoder.stop()
        executor.shutdown()


async def test_finals_go_ahead_of_speculations_and_a_promoted_one_keeps_its_place() -> None:
    async with gated() as (decoder, recognizer, stream):
        busy = decoder.decode(stream, utt(0))
        await async_wait_until(lambda: decoder.batches == 1)  # the only thread is taken
        spec_a = decoder.speculate(stream, utt(100))  # first silence of call A
        spec_b = decoder.speculate(stream, utt(200))  # call B; its caller speaks again:
        spec_b.cancel()
        final_c = decoder.decode(stream, utt(300))  # call C: a final, no speculation
        spec_d = decoder.speculate(stream, utt(400))
        decoder.promote(spec_d)  # D's end confirmed after C's final arrived
        spec_e = decoder.speculate(stream, utt(500))  # stays a speculation
        recognizer.gate.set()
        await asyncio.wait_for(asyncio.gather(busy, spec_a, final_c, spec_d, spec_e), 10)
        # finals first (C, then D: D's place is where its speculation was asked), then the
        # speculations (A, E) in the order asked; B was never decoded
        assert recognizer.order == [0, 300, 400, 100, 500]
        assert decoder.speculative_started == 4
        assert decoder.speculative_dropped == 1 and decoder.speculative_wasted == 0


async def test_a_promoted_speculation_keeps_its_place_among_finals() -> None:
    async with gated() as (decoder, recognizer, stream):
        busy = decoder.decode(stream, utt(0))
        await async_wait_until(lambda: decoder.batches == 1)
        spec = decoder.speculate(stream, utt(100))  # asked at the first silence
        final = decoder.decode(stream, utt(200))  # another call's final, later
        decoder.promote(spec)  # the first one's end is confirmed: it was asked first
        urgent_spec = decoder.speculate(stream, utt(300))
        decoder.promote(urgent_spec, urgent=True)  # a stop arrived: ahead of everything
        recognizer.gate.set()
        await asyncio.wait_for(asyncio.gather(busy, spec, final, urgent_spec), 10)
        assert recognizer.order == [0, 300, 100, 200]


async def test_a_speculation_thrown_away_after_it_ran_is_counted_as_wasted() -> None:
    async with gated() as (decoder, recognizer, stream):
        spec = decoder.speculate(stream, utt(0))  # idle: taken at once
        await async_wait_until(lambda: decoder.batches == 1)
        spec.cancel()  # the caller spoke again while it ran
        after = decoder.decode(stream, utt(100))
        recognizer.gate.set()
        await asyncio.wait_for(after, 10)
        assert decoder.speculative_wasted == 1 and decoder.speculative_dropped == 0


async def test_waiting_finals_are_shared_over_the_free_threads() -> None:
    async with gated(slots=2, max_batch=8, started=False) as (decoder, recognizer, stream):
        futures = [decoder.decode(stream, utt(i * 100)) for i in range(4)]  # before the batcher
        decoder.start()
        await async_wait_until(lambda: decoder.batches == 2)
        recognizer.gate.set()
        await asyncio.wait_for(asyncio.gather(*futures), 10)
        assert decoder.batches == 2 and decoder.decoded == 4  # 2 + 2, not 4 on one thread
        assert sorted(recognizer.order) == [0, 100, 200, 300]


def test_decode_counters_are_exported() -> None:
    registry = CollectorRegistry()
    counts = {
        "batches": 4,
        "decoded": 6,
        "speculative_started": 5,
        "speculative_used": 3,
        "speculative_dropped": 1,
        "speculative_wasted": 2,
    }
    registry.register(DecodeCollector(lambda: counts))
    value = registry.get_sample_value
    assert value("agentstream_worker_decode_batches_total") == 4
    assert value("agentstream_worker_decoded_utterances_total") == 6
    assert value("agentstream_worker_speculative_decodes_total", {"outcome": "dropped"}) == 1
    assert value("agentstream_worker_speculative_decodes_total", {"outcome": "wasted"}) == 2
    assert value("agentstream_worker_speculative_decodes_total", {"outcome": "used"}) == 3
