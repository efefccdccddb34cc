"""The transcription worker through the real broker, with the fake recogniser.

One worker process serves the module (ordering, concurrent calls, dead letters, stop); the
restart test runs its own worker twice with one app id (SIGKILL in the middle of an utterance).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer

from agentstream.stack.topics import create_topics
from analytics.asr.audio import chunks, float_to_pcm16
from schemas.records import AudioFrameMeta, CallEvent, DeadLetter, Transcript
from schemas.topics import AUDIO, CALLS, DEADLETTER, TRANSCRIPTS, prefixed
from tests.helpers import read_topic, wait_until
from tests.unit.asr.asr_fakes import call_pcm, silence

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


class WorkerProc:
    def __init__(self, bootstrap: str, prefix: str, app_id: str, tmp: Path) -> None:
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "AGENTSTREAM_WORKER_TOPIC_PREFIX": prefix,
            "AGENTSTREAM_WORKER_APP_ID": app_id,
            "AGENTSTREAM_WORKER_VAD_MIN_SILENCE_MS": "300",
            "AGENTSTREAM_WORKER_VAD_SPEECH_PAD_MS": "64",
            "AGENTSTREAM_WORKER_STOP_GRACE_S": "0.5",
            "AGENTSTREAM_WORKER_IDLE_SWEEP_INTERVAL_S": "0.2",
            "AGENTSTREAM_WORKER_COMMIT_INTERVAL_S": "0.5",
            # the fake recogniser reads tone amplitudes back as text: keep the level as sent
            "AGENTSTREAM_WORKER_AGC": "false",
        }
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        log = (self.tmp / f"asr-worker{self.runs}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.asr.asr_worker_main"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.tmp.glob("asr-worker*.log"))
        )


class Calls:
    """Produces a call's audio frames (and call events) like ingest does."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        self.audio = prefixed(AUDIO, prefix)
        self.calls = prefixed(CALLS, prefix)
        self.seq: dict[str, int] = {}

    def frames(self, call_sid: str, pcm: bytes) -> None:
        for frame in chunks(pcm, 8000, 100):
            n = self.seq.get(call_sid, 0)
            self.seq[call_sid] = n + 1
            meta = AudioFrameMeta(
                call_sid=call_sid,
                stream_sid=f"S{call_sid}",
                sequence_number=n + 1,
                sample_rate_hz=8000,
                received_at_ms=int(time.time() * 1000),
                offset_ms=n * 100,
            )
            self.producer.send(
                self.audio, key=call_sid.encode(), value=frame, headers=meta.to_headers()
            )
        self.producer.flush()

    def stop(self, call_sid: str) -> None:
        event = CallEvent(kind="stop", call_sid=call_sid, occurred_at_ms=int(time.time() * 1000))
        self.producer.send(self.calls, key=call_sid.encode(), value=event.to_bytes())
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()


def transcripts(
    bootstrap: str, prefix: str, expected: int = 1_000_000, timeout: float = 20.0
) -> list[Transcript]:
    """Utterances from the beginning (watermark markers left out): until ``expected`` arrived,
    or all within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        window = max(0.5, min(2.0, deadline - time.monotonic()))
        records = read_topic(bootstrap, prefixed(TRANSCRIPTS, prefix), 1_000_000, timeout=window)
        parsed = [Transcript.model_validate(orjson.loads(r.value)) for r in records]
        utterances = [t for t in parsed if t.marker is None]
        if len(utterances) >= expected or time.monotonic() >= deadline:
            return utterances


def texts(records: list[Transcript], call_sid: str) -> list[str]:
    return [t.text for t in records if t.call_sid == call_sid and t.is_final]


@pytest.fixture(scope="module")
def shared(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerProc, Calls, str]]:
    prefix = f"asr{os.getpid()}{int(time.time())}."
    create_topics(kafka_bootstrap, prefix)
    worker = WorkerProc(kafka_bootstrap, prefix, f"asr-{prefix}", tmp_path_factory.mktemp("asr"))
    worker.start()
    calls = Calls(kafka_bootstrap, prefix)
    try:
        yield worker, calls, prefix
    finally:
        calls.close()
        worker.stop()


def test_concurrent_calls_in_order_with_dead_letter(
    kafka_bootstrap: str, shared: tuple[WorkerProc, Calls, str]
) -> None:
    worker, calls, prefix = shared
    plan = {f"CA{i}": [0.2 + 0.05 * i, 0.5, 0.25 + 0.05 * i] for i in range(5)}
    plan["CABAD"] = [0.9, 0.3]
    pcms = {sid: call_pcm(amps) for sid, amps in plan.items()}
    # interleave the calls' frames as live calls would arrive
    frame_lists = {sid: chunks(pcm, 8000, 100) for sid, pcm in pcms.items()}
    for i in range(max(len(f) for f in frame_lists.values())):
        for sid, frames in frame_lists.items():
            if i < len(frames):
                calls.frames(sid, frames[i])
    expected = sum(len(a) for a in plan.values()) - 1
    records = transcripts(kafka_bootstrap, prefix, expected)
    for sid, amps in plan.items():
        want = [f"amp {a:.2f}" for a in amps if a < 0.85]
        assert texts(records, sid) == want, (sid, worker.log()[-3000:])
    for record in records:
        assert record.engine == "fake" and record.is_final
        assert record.stream_sid == f"S{record.call_sid}"
        assert 0 <= record.latency_ms < 15_000
    dead = read_topic(kafka_bootstrap, prefixed(DEADLETTER, prefix), 1)
    letters = [DeadLetter.model_validate(orjson.loads(r.value)) for r in dead]
    assert [(d.stage, d.call_sid) for d in letters] == [("asr", "CABAD")]


def test_stop_flushes_and_drops_call_state(
    kafka_bootstrap: str, shared: tuple[WorkerProc, Calls, str]
) -> None:
    worker, calls, prefix = shared
    calls.frames("CASTOP", call_pcm([0.2]) + call_pcm([0.35], gap_ms=0))
    wait_until(
        lambda: "amp 0.20" in texts(transcripts(kafka_bootstrap, prefix, timeout=1), "CASTOP"), 20
    )
    assert "call CASTOP ended" not in worker.log()
    calls.stop("CASTOP")
    wait_until(lambda: "call CASTOP ended" in worker.log(), 20)
    # the open utterance was only flushed because the call ended
    records = transcripts(kafka_bootstrap, prefix, timeout=2)
    assert texts(records, "CASTOP") == ["amp 0.20", "amp 0.35"]


def committed(bootstrap: str, group: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return sum(max(0, o.offset) for tp, o in offsets.items() if tp.topic.endswith(AUDIO.name))


def test_killed_worker_resumes_from_committed_offsets(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    app_id = f"asr-restart-{topic_prefix}"
    worker = WorkerProc(kafka_bootstrap, topic_prefix, app_id, tmp_path)
    calls = Calls(kafka_bootstrap, topic_prefix)
    try:
        worker.start()
        done_part = call_pcm([0.2, 0.3])  # 300 + 2 x 1300 ms = 29 frames
        calls.frames("CAR", done_part + call_pcm([0.4], gap_ms=0)[: 8000 * 2 * 8 // 10])
        wait_until(lambda: len(transcripts(kafka_bootstrap, topic_prefix, 2, timeout=1)) >= 2, 20)
        # frames up to a lead-in before the open utterance get committed, none after: the
        # energy gate's lead-in is the speech pad (64 ms) and two frames' slack (296 ms)
        open_at = len(done_part) // 1600 + 3  # call_pcm starts with 300 ms of silence
        frames_before_open = open_at - 3
        wait_until(lambda: committed(kafka_bootstrap, app_id) >= frames_before_open, 20)
        time.sleep(1.0)  # two more commit intervals: nothing inside the utterance may commit
        assert committed(kafka_bootstrap, app_id) == frames_before_open
        worker.stop(signal.SIGKILL)
        # the 0.4 utterance ends (500 + 300 ms of silence), then another one follows
        calls.frames("CAR", float_to_pcm16(silence(500)) + call_pcm([0.45]))
        worker.start()
        records = transcripts(kafka_bootstrap, topic_prefix, 4)
        got = [(t.text, t.start_ms) for t in records]
        assert texts(records, "CAR") == ["amp 0.20", "amp 0.30", "amp 0.40", "amp 0.45"], got
    finally:
        calls.close()
        worker.stop()
