"""A killed worker's successor resumes every call where it left off (per-call progress).

Two calls on one audio partition: A holds an open utterance (so the partition's committed
offset stays before it), B publishes two utterances after that point. After a SIGKILL the
successor re-reads B's audio from mid-call; it must skip what B already published (no
duplicate) and still transcribe A's utterance and B's next one once.

And on real speech with the real VAD: a worker killed in the middle of an utterance, its
successor cuts that utterance with the start, so the id, an uninterrupted run gives it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from agentstream.stack.broker import EmbeddedBroker
from agentstream.stack.topics import create_topics
from analytics.asr.audio import chunks, float_to_pcm16, read_audio
from analytics.asr.frontend import FrontEnd
from analytics.asr.replay import lead_in_ms
from analytics.asr.service import ServiceConfig
from analytics.asr.vad import RATE_HZ, Segmenter, SileroVad, SpeechSegment
from analytics.settings import WorkerSettings
from analytics.worker import service_config
from schemas.partition import partition_for
from tests.helpers import wait_until
from tests.integration.asr.test_asr_worker import (
    Calls,
    WorkerProc,
    committed,
    texts,
    transcripts,
)
from tests.unit.asr.asr_fakes import call_pcm, silence

pytestmark = pytest.mark.integration

FREEZE_S = 60.0  # as in the issue; well past the worker's 6 s session timeout


def same_partition(prefix: str) -> tuple[str, str]:
    sids = [f"CA{prefix}{n}" for n in range(64)]
    first = sids[0]
    other = next(
        s for s in sids[1:] if partition_for(s.encode(), 8) == partition_for(first.encode(), 8)
    )
    return first, other


def test_a_restarted_worker_resumes_each_call_without_duplicates(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    worker = WorkerProc(kafka_bootstrap, topic_prefix, f"asr-resume-{topic_prefix}", tmp_path)
    calls = Calls(kafka_bootstrap, topic_prefix)
    a, b = same_partition(topic_prefix.strip("."))
    try:
        worker.start()
        calls.frames(a, call_pcm([0.4], gap_ms=0)[: 8000 * 2 * 8 // 10])  # utterance left open
        calls.frames(b, call_pcm([0.2, 0.3]))
        wait_until(lambda: len(texts(transcripts(kafka_bootstrap, topic_prefix, 2, 1), b)) >= 2, 30)
        worker.stop(signal.SIGKILL)
        calls.frames(a, float_to_pcm16(silence(500)))  # A's utterance ends
        calls.frames(b, call_pcm([0.45]))
        worker.start()

        def finished() -> bool:
            got = transcripts(kafka_bootstrap, topic_prefix, 4, timeout=1)
            return "amp 0.45" in texts(got, b) and "amp 0.40" in texts(got, a)

        wait_until(finished, 60)
        records = transcripts(kafka_bootstrap, topic_prefix, 5, timeout=2)
        assert texts(records, b) == ["amp 0.20", "amp 0.30", "amp 0.45"], worker.log()[-3000:]
        assert texts(records, a) == ["amp 0.40"]
        assert len({t.utterance_id for t in records}) == len(records)
    finally:
        calls.close()
        worker.stop()


def test_a_frozen_broker_mid_call_duplicates_no_utterance(tmp_path: Path, unique: str) -> None:
    """The broker frozen (SIGSTOP) past the worker's session timeout: its group membership
    expires and its partitions are assigned again from the committed offsets; no utterance is
    transcribed twice and none is lost."""
    prefix = f"z{unique}."
    broker = EmbeddedBroker().start()
    assert broker.process is not None
    pid = broker.process.pid
    worker = WorkerProc(broker.bootstrap, prefix, f"asr-freeze-{prefix}", tmp_path)
    calls: Calls | None = None
    try:
        create_topics(broker.bootstrap, prefix)
        calls = Calls(broker.bootstrap, prefix)
        a, b = same_partition(prefix.strip("."))
        worker.start()
        calls.frames(a, call_pcm([0.4], gap_ms=0)[: 8000 * 2 * 8 // 10])
        calls.frames(b, call_pcm([0.2, 0.3]))
        wait_until(lambda: len(texts(transcripts(broker.bootstrap, prefix, 2, 1), b)) >= 2, 30)
        os.kill(pid, signal.SIGSTOP)
        threading.Event().wait(FREEZE_S)  # the fault itself: longer than the session timeout
        os.kill(pid, signal.SIGCONT)
        calls.frames(a, float_to_pcm16(silence(500)))
        calls.frames(b, call_pcm([0.45]))

        def finished() -> bool:
            got = transcripts(broker.bootstrap, prefix, 4, timeout=1)
            return "amp 0.45" in texts(got, b) and "amp 0.40" in texts(got, a)

        wait_until(finished, 90)
        records = transcripts(broker.bootstrap, prefix, 5, timeout=2)
        assert texts(records, b) == ["amp 0.20", "amp 0.30", "amp 0.45"], worker.log()[-3000:]
        assert texts(records, a) == ["amp 0.40"]
    finally:
        os.kill(pid, signal.SIGCONT)
        if calls is not None:
            calls.close()
        worker.stop()
        broker.stop()


SPEECH = Path(__file__).resolve().parents[4] / "shared" / "data" / "speech"
CALL = SPEECH / "audio" / "osr_us_000_0034_8k.flac"  # 35 s of sentences over a phone line


def uninterrupted_starts(pcm: bytes, config: ServiceConfig) -> list[int]:
    """The utterance starts the worker's path cuts from the call run start to end."""
    segmenter = Segmenter(SileroVad(), config.vad)
    front = FrontEnd(8000, config.front, RATE_HZ)
    found = []
    for frame in chunks(pcm, 8000, 100):
        for event in segmenter.feed(front.process(frame, 8000)).events:
            if isinstance(event, SpeechSegment) and event.keep:
                found.append(event.start_ms)
    last = segmenter.flush()
    return found + ([last.start_ms] if last is not None and last.keep else [])


def test_a_worker_killed_mid_utterance_gives_it_the_id_of_an_uninterrupted_run(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    app_id = f"asr-ids-{topic_prefix}"
    worker = WorkerProc(kafka_bootstrap, topic_prefix, app_id, tmp_path)
    for name in ("VAD_MIN_SILENCE_MS", "VAD_SPEECH_PAD_MS", "AGC"):
        del worker.env[f"AGENTSTREAM_WORKER_{name}"]  # the worker's defaults, AGC on
    worker.env["ASR_TEST_VAD"] = "silero"
    pcm = float_to_pcm16(read_audio(CALL, 8000)[0])
    config = service_config(WorkerSettings())
    starts = uninterrupted_starts(pcm, config)
    assert len(starts) >= 10
    # killed 1 s into the first utterance that starts more than a lead-in into the call
    lead_in = lead_in_ms(config.front, config.vad)
    open_ms = next(s for s in starts if s > lead_in + 1000)
    cut = (open_ms + 1000) * 16  # bytes of 8 kHz PCM16
    calls = Calls(kafka_bootstrap, topic_prefix)
    try:
        worker.start()
        calls.frames("CAIDS", pcm[:cut])
        before = starts.index(open_ms)

        def published() -> int:
            records = transcripts(kafka_bootstrap, topic_prefix, before, timeout=1)
            return len(texts(records, "CAIDS"))

        wait_until(lambda: published() >= before, 60)
        time.sleep(1.0)  # the rest of the frames are read; the utterance stays open
        assert published() == before
        # committed: up to a lead-in before the utterance (the old rule: up to its first frame)
        assert -300 <= committed(kafka_bootstrap, app_id) * 100 - (open_ms - lead_in) <= 400
        worker.stop(signal.SIGKILL)
        calls.frames("CAIDS", pcm[cut:])
        worker.start()
        wait_until(lambda: published() >= len(starts), 90)
        records = transcripts(kafka_bootstrap, topic_prefix, len(starts), timeout=2)
        ids = [t.utterance_id for t in records if t.call_sid == "CAIDS"]
        assert ids == [f"CAIDS-{s}" for s in starts], worker.log()[-3000:]
    finally:
        calls.close()
        worker.stop()
