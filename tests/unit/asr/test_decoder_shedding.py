"""Under load, speculation goes first: a speculative decode is refused (and counted) while
utterances wait or every inference thread is busy; final decodes are never refused."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from prometheus_client import CollectorRegistry

from analytics.asr.decoder import BatchDecoder
from analytics.asr.vad import SpeechSegment
from analytics.metrics import DecodeCollector
from tests.unit.asr.asr_fakes import GatedRecognizer


async def test_speculation_is_shed_while_the_decoder_is_busy() -> None:
    recognizer = GatedRecognizer(max_batch=2)
    gate = recognizer.gate
    executor = ThreadPoolExecutor(max_workers=1)
    decoder = BatchDecoder(recognizer, executor, slots=1)  # type: ignore[arg-type]
    decoder.start()
    audio = np.full(1600, 0.3, dtype=np.float32)
    stream = recognizer.open_stream()
    try:
        first = decoder.speculate(stream, SpeechSegment(audio, 0, 100))
        assert first is not None  # idle: speculation starts
        await asyncio.sleep(0.05)  # it runs; the only thread is busy
        assert decoder.speculate(stream, SpeechSegment(audio, 200, 300)) is None
        final = decoder.decode(stream, SpeechSegment(audio, 400, 500))  # a final always queues
        assert decoder.speculate(stream, SpeechSegment(audio, 600, 700)) is None
        assert decoder.speculative_shed == 2
        gate.set()
        await asyncio.wait_for(asyncio.gather(first, final), 10)
        await asyncio.sleep(0.05)
        assert decoder.speculate(stream, SpeechSegment(audio, 800, 900)) is not None  # idle again
        assert decoder.batches >= 2 and decoder.decoded >= 2
        assert decoder.mean_batch == decoder.decoded / decoder.batches
    finally:
        gate.set()
        await decoder.stop()
        executor.shutdown()


def test_decode_counters_are_exported() -> None:
    registry = CollectorRegistry()
    counts = {
        "batches": 4,
        "decoded": 6,
        "speculative_started": 5,
        "speculative_used": 3,
        "speculative_shed": 2,
        "speculative_behind": 7,
        "partials_shed": 1,
        "gaps": 9,
        "over_bound": 2,
        "vad_batches": 10,
        "vad_frames": 40,
    }
    registry.register(DecodeCollector(lambda: counts))
    value = registry.get_sample_value
    assert value("agentstream_worker_decode_batches_total") == 4
    assert value("agentstream_worker_decoded_utterances_total") == 6
    assert value("agentstream_worker_speculative_decodes_total", {"outcome": "shed"}) == 2
    assert value("agentstream_worker_speculative_decodes_total", {"outcome": "used"}) == 3
    assert value("agentstream_worker_speculative_decodes_total", {"outcome": "behind"}) == 7
    assert value("agentstream_worker_partials_shed_total") == 1
    assert value("agentstream_worker_untranscribed_utterances_total") == 9
    assert value("agentstream_worker_calls_over_bound") == 2
    assert value("agentstream_worker_vad_frames_total") == 40
    assert value("agentstream_worker_vad_batches_total") == 10
