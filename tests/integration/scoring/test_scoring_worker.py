"""The scoring agent through the real broker: scores, DTMF, dead letters, stop, restart recovery.

The worker runs as a real subprocess (``scoring_worker_main``, VADER engine so it loads in
milliseconds); the restart test stops it and starts a fresh process with the same app id, which
must continue each call's running state from the table's changelog (on tansu too, where
ListOffsets(latest) answers too low).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer

from agentstream.stack.topics import create_topics
from schemas.records import CallEvent, DeadLetter, Score, Transcript
from schemas.topics import CALLS, DEADLETTER, SCORES, TRANSCRIPTS, prefixed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


class Worker:
    def __init__(self, bootstrap: str, prefix: str, app_id: str, tmp: Path, **extra: str) -> None:
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "AGENTSTREAM_WORKER_TOPIC_PREFIX": prefix,
            "AGENTSTREAM_WORKER_APP_ID": app_id,
            "AGENTSTREAM_WORKER_SCORING__ENGINE": "vader",
            "AGENTSTREAM_WORKER_SCORING__SWEEP_INTERVAL_S": "0.5",
            **extra,
        }
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        log = (self.tmp / f"worker{self.runs}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.scoring.scoring_worker_main"],
            cwd=ROOT,
            env={**self.env, "AGENTSTREAM_WORKER_DATADIR": str(self.tmp / f"data{self.runs}")},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.tmp.glob("*.log"))


@pytest.fixture
def worker(
    kafka_bootstrap: str, topic_prefix: str, unique: str, tmp_path: Path
) -> Iterator[Worker]:
    create_topics(kafka_bootstrap, topic_prefix)
    w = Worker(
        kafka_bootstrap,
        topic_prefix,
        f"scoring-{unique}",
        tmp_path,
        AGENTSTREAM_WORKER_SCORING__DROP_AFTER_STOP_S="0",
    )
    yield w
    w.stop()


class Reader:
    """Follows a topic from the beginning."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=50,
        )
        self.records: list[Any] = []

    def until(self, predicate: Any, timeout: float, what: str, worker: Worker) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not predicate(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{worker.log()}")
            if worker.proc is not None and worker.proc.poll() is not None:
                raise AssertionError(f"worker exited waiting for {what}\n{worker.log()}")
            for batch in self.consumer.poll(timeout_ms=200).values():
                self.records.extend(batch)
        return self.records

    def close(self) -> None:
        self.consumer.close()


def transcript(call: str, index: int, text: str, *, final: bool = True) -> Transcript:
    now = int(time.time() * 1000)
    return Transcript(
        call_sid=call,
        stream_sid=f"s-{call}",
        tenant="acme",
        utterance_id=f"{call}-{index}",
        utterance_index=index,
        is_final=final,
        text=text,
        start_ms=index * 3000,
        end_ms=index * 3000 + 2000,
        engine="test",
        speech_end_at_ms=now - 300,
        produced_at_ms=now,
        latency_ms=300.0,
    )


def send(producer: KafkaProducer, topic: str, key: str, value: bytes) -> None:
    producer.send(topic, key=key.encode(), value=value).get(timeout=10)


def scores_of(records: list[Any], call: str) -> list[Score]:
    out = [Score.model_validate(orjson.loads(r.value)) for r in records]
    return [s for s in out if s.call_sid == call]


def test_scores_state_dtmf_deadletter_and_restart(
    kafka_bootstrap: str, topic_prefix: str, unique: str, worker: Worker
) -> None:
    t_topic = prefixed(TRANSCRIPTS, topic_prefix)
    c_topic = prefixed(CALLS, topic_prefix)
    call = f"CA{unique}"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=0)
    scores = Reader(kafka_bootstrap, prefixed(SCORES, topic_prefix))
    dead = Reader(kafka_bootstrap, prefixed(DEADLETTER, topic_prefix))
    try:
        worker.start()
        start = CallEvent(kind="start", call_sid=call, tenant="acme", occurred_at_ms=1000)
        send(producer, c_topic, call, start.to_bytes())
        send(
            producer,
            t_topic,
            call,
            transcript(call, 0, "Hello, thanks for calling back").to_bytes(),
        )
        send(producer, t_topic, call, transcript(call, 1, "partial hypo", final=False).to_bytes())
        send(
            producer, t_topic, call, transcript(call, 1, "This is terrible, I am angry").to_bytes()
        )
        send(producer, t_topic, call, b"{not json")
        scores.until(lambda r: len(scores_of(r, call)) >= 2, 60, "first two scores", worker)
        first = scores_of(scores.records, call)
        assert [s.utterance_index for s in first] == [0, 1]
        assert first[0].sentiment.label == "positive" and first[1].sentiment.label == "negative"
        assert first[1].state.utterance_count == 2
        assert first[1].state.started_at_ms == 1000
        assert first[1].latency_ms >= 0 and first[1].transcript_at_ms > 0
        assert first[1].speech_end_at_ms == first[1].transcript_at_ms - 300
        dead.until(lambda r: len(r) >= 1, 20, "dead letter", worker)
        letter = DeadLetter.model_validate(orjson.loads(dead.records[0].value))
        assert letter.stage == "scoring" and letter.source_topic == t_topic

        dtmf = CallEvent(
            kind="dtmf", call_sid=call, tenant="acme", occurred_at_ms=2000, dtmf_digit="5"
        )
        send(producer, c_topic, call, dtmf.to_bytes())
        text = "I want to talk to a human, my card is 4111 1111 1111 1111"
        send(producer, t_topic, call, transcript(call, 2, text).to_bytes())
        scores.until(lambda r: len(scores_of(r, call)) >= 3, 30, "third score", worker)
        third = scores_of(scores.records, call)[2]
        assert third.text == "I want to talk to a human, my card is [CARD]"
        assert third.pii_kinds == ["CARD"]
        assert [k.category for k in third.keywords] == ["human_request"]

        # Restart: a fresh process with the same app id continues the call's state.
        worker.stop()
        worker.start()
        # A replay of an utterance already folded must not be folded again.
        send(producer, t_topic, call, transcript(call, 2, text).to_bytes())
        send(
            producer,
            t_topic,
            call,
            transcript(call, 3, "Please let me speak to an agent").to_bytes(),
        )
        scores.until(lambda r: len(scores_of(r, call)) >= 4, 60, "score after restart", worker)
        after = scores_of(scores.records, call)
        assert [s.utterance_index for s in after] == [0, 1, 2, 3]
        state = after[3].state
        assert state.utterance_count == 4
        assert state.last_dtmf == "5"
        assert state.keyword_hits.get("human_request") == 2
        assert state.sentiment_last_n[:3] == [s.sentiment.score for s in after[:3]]
        assert state.started_at_ms == 1000

        # stop drops the state (after the grace, 0 s here): a tombstone on the changelog,
        # and a later utterance of the same SID starts afresh.
        changelog = Reader(kafka_bootstrap, f"scoring-{unique}-agentstream-callstate-changelog")
        try:
            stop = CallEvent(kind="stop", call_sid=call, tenant="acme", occurred_at_ms=3000)
            send(producer, c_topic, call, stop.to_bytes())
            changelog.until(
                lambda r: any(x.key == call.encode() and x.value is None for x in r),
                30,
                "tombstone",
                worker,
            )
        finally:
            changelog.close()
        send(producer, t_topic, call, transcript(call, 9, "are you there").to_bytes())
        scores.until(lambda r: len(scores_of(r, call)) >= 5, 30, "post-stop score", worker)
        assert scores_of(scores.records, call)[4].state.utterance_count == 1
    finally:
        producer.close()
        scores.close()
        dead.close()


async def test_changelog_guard_reads_to_the_fetch_high_water_mark(
    kafka_bootstrap: str, unique: str
) -> None:
    from aiokafka import AIOKafkaProducer

    from analytics.scoring.agent import ChangelogGuard

    topic = f"t{unique}-callstate-changelog"
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i in range(300):
            await producer.send(
                topic, key=b"call-%d" % (i % 7), value=b"v%d" % i, partition=i % 7 % 2
            )
        await producer.send(topic, key=b"call-0", value=None, partition=0)  # tombstone
        await producer.flush()
    finally:
        await producer.stop()
    data: dict[bytes, bytes] = {b"stale": b"x"}
    guard = ChangelogGuard(kafka_bootstrap, topic, data, timeout_s=20)
    await guard.ensure({0, 1, 2})
    assert guard.done == {0, 1, 2}
    assert guard.records_read == 301
    expected: dict[bytes, bytes] = {b"stale": b"x"}
    for i in range(300):
        expected[b"call-%d" % (i % 7)] = b"v%d" % i
    del expected[b"call-0"]
    assert data == expected
    await guard.ensure({1})  # already read: nothing more
    assert guard.records_read == 301
    guard.forget([1])
    await guard.ensure({1})
    assert guard.records_read == 301 + sum(1 for i in range(300) if i % 7 % 2 == 1)
