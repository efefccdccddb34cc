"""A record of every topic goes through the real broker with kafka-python and with aiokafka
and comes back byte-exact, headers included."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaProducer

from agentstream.stack.topics import create_topics
from schemas.records import (
    AudioFrameMeta,
    CallEvent,
    CallState,
    DeadLetter,
    Decision,
    Evidence,
    KeywordHit,
    Record,
    Score,
    Sentiment,
    Transcript,
)
from schemas.topics import AUDIO, CALLS, DEADLETTER, DECISIONS, SCORES, TRANSCRIPTS, prefixed
from tests.helpers import read_topic

pytestmark = pytest.mark.integration

CALL = "CA-roundtrip"


def _samples() -> list[tuple[str, bytes, list[tuple[str, bytes]], type[Record] | None]]:
    meta = AudioFrameMeta(
        call_sid=CALL,
        stream_sid="MZ1",
        sequence_number=2,
        chunk=1,
        timestamp_ms=100,
        sample_rate_hz=8000,
        received_at_ms=1,
        offset_ms=0,
    )
    pcm = bytes(range(256)) * 6 + bytes(64)
    records: list[Record] = [
        CallEvent(
            kind="start",
            call_sid=CALL,
            stream_sid="MZ1",
            occurred_at_ms=1,
            sample_rate_hz=8000,
            custom_parameters={"tenant": "acme"},
        ),
        Transcript(
            call_sid=CALL,
            utterance_id=f"{CALL}:0",
            utterance_index=0,
            is_final=True,
            text="my card is [CARD]",
            pii_kinds=["CARD"],
            start_ms=0,
            end_ms=900,
            engine="whisper",
            speech_end_at_ms=1,
            produced_at_ms=2,
            latency_ms=1.0,
        ),
        Score(
            call_sid=CALL,
            utterance_id=f"{CALL}:0",
            text="talk to a human",
            sentiment=Sentiment(score=-0.7, label="negative", confidence=0.9, engine="x"),
            keywords=[
                KeywordHit(
                    category="human_request",
                    phrase="talk to a human",
                    matched="talk to a human",
                    span=(0, 15),
                )
            ],
            state=CallState(utterance_count=1, keyword_hits={"human_request": 1}),
            scored_at_ms=3,
            latency_ms=2.0,
        ),
        Decision(
            call_sid=CALL,
            decision="escalate",
            rule_id="human",
            reason="asked for a human",
            target_group="support",
            evidence=[Evidence(utterance_id=f"{CALL}:0", text="x")],
            decided_at_ms=4,
            latency_ms=0.3,
        ),
        DeadLetter(
            stage="ingest", error="bad json", call_sid=CALL, raw_base64="e30=", occurred_at_ms=5
        ),
    ]
    topics = [CALLS, TRANSCRIPTS, SCORES, DECISIONS, DEADLETTER]
    out: list[tuple[str, bytes, list[tuple[str, bytes]], type[Record] | None]] = [
        (AUDIO.name, pcm, meta.to_headers(), None)
    ]
    for spec, record in zip(topics, records, strict=True):
        out.append((spec.name, record.to_bytes(), [], type(record)))
    return out


def _check(bootstrap: str, prefix: str) -> None:
    for name, value, headers, model in _samples():
        got = read_topic(bootstrap, prefix + name, expected=1)
        assert len(got) == 1, name
        record = got[0]
        assert record.key == CALL.encode()
        assert record.value == value
        assert [(k, bytes(v)) for k, v in record.headers] == headers
        if model is not None:
            assert model.from_bytes(record.value).to_bytes() == value
        else:
            assert AudioFrameMeta.from_headers(list(record.headers)).call_sid == CALL


def test_roundtrip_kafka_python(kafka_bootstrap: str, topic_prefix: str) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    for name, value, headers, _ in _samples():
        producer.send(topic_prefix + name, key=CALL.encode(), value=value, headers=headers)
    producer.flush()
    producer.close()
    _check(kafka_bootstrap, topic_prefix)


async def test_roundtrip_aiokafka(kafka_bootstrap: str, topic_prefix: str) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for name, value, headers, _ in _samples():
            await producer.send_and_wait(
                topic_prefix + name, key=CALL.encode(), value=value, headers=headers
            )
    finally:
        await producer.stop()
    topic = prefixed(DECISIONS, topic_prefix)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=30,
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=5000)
        records = [r for rs in batch.values() for r in rs]
        assert len(records) == 1
        assert Decision.from_bytes(records[0].value).rule_id == "human"
    finally:
        await consumer.stop()
    _check(kafka_bootstrap, topic_prefix)
