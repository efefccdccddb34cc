"""``agentstream tail`` and ``agentstream call`` against the real embedded broker."""

from __future__ import annotations

import orjson
import pytest
from kafka import KafkaProducer

from agentstream.cli import main
from agentstream.stack.topics import create_topics
from schemas.records import AudioFrameMeta, CallEvent, Decision, Transcript
from schemas.topics import AUDIO, CALLS, DECISIONS, TRANSCRIPTS, prefixed

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, prefix: str, sid: str, other: str) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    base = 1_700_000_000_000
    for n in range(3):
        meta = AudioFrameMeta(
            call_sid=sid,
            stream_sid="st1",
            sequence_number=n + 2,
            sample_rate_hz=8000,
            received_at_ms=base + 100 * n,
        )
        producer.send(
            prefixed(AUDIO, prefix),
            key=sid.encode(),
            value=b"\x01\x00" * 800,
            headers=meta.to_headers(),
        )
    start = CallEvent(kind="start", call_sid=sid, occurred_at_ms=base - 5, sample_rate_hz=8000)
    producer.send(prefixed(CALLS, prefix), key=sid.encode(), value=start.to_bytes())
    for call in (sid, other):
        transcript = Transcript(
            call_sid=call,
            utterance_id=f"{call}-0",
            utterance_index=0,
            is_final=True,
            text="i want a human",
            start_ms=0,
            end_ms=900,
            engine="fake",
            speech_end_at_ms=base + 900,
            produced_at_ms=base + 1400,
            latency_ms=500,
        )
        producer.send(prefixed(TRANSCRIPTS, prefix), key=call.encode(), value=transcript.to_bytes())
    decision = Decision(
        call_sid=sid,
        decision="escalate",
        rule_id="asks-human",
        reason="asked for a human",
        decided_at_ms=base + 1500,
        latency_ms=3.0,
    )
    producer.send(prefixed(DECISIONS, prefix), key=sid.encode(), value=decision.to_bytes())
    producer.flush()
    producer.close()


def test_call_lists_one_call_in_time_order(
    kafka_bootstrap: str, topic_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    _produce(kafka_bootstrap, topic_prefix, "CA1", "CA2")
    argv = ["call", "CA1", "--bootstrap", kafka_bootstrap, "--topic-prefix", topic_prefix]
    assert main([*argv, "--json", "--idle-ms", "300"]) == 0
    lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [line["topic"].rsplit(".", 1)[-1] for line in lines]
    assert kinds == ["calls", "audio", "transcripts", "decisions"]
    audio = lines[1]["value"]
    assert audio["audio_frames"] == 3 and audio["sequence"] == [2, 4] and audio["audio_ms"] == 300
    assert [line["time_ms"] for line in lines] == sorted(line["time_ms"] for line in lines)
    assert all(line["value"].get("call_sid", "CA1") == "CA1" for line in lines), (
        "another call's record leaked in"
    )
    assert main(argv + ["--idle-ms", "300"]) == 0
    text = capsys.readouterr().out
    assert "escalate rule=asks-human" in text and "'i want a human'" in text


def test_tail_prints_json_and_audio_metadata_only(
    kafka_bootstrap: str, topic_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    _produce(kafka_bootstrap, topic_prefix, "CA3", "CA4")
    common = ["--bootstrap", kafka_bootstrap, "--topic-prefix", topic_prefix, "--from-beginning"]
    assert main(["tail", "audio", *common, "--compact", "-n", "3"]) == 0
    frames = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(frames) == 3
    assert frames[0]["value"]["pcm_bytes"] == 1600
    assert frames[0]["value"]["audio_frame"]["call_sid"] == "CA3"
    assert "payload" not in frames[0]["value"]
    assert main(["tail", "transcripts", *common, "--call", "CA4", "--no-follow"]) == 0
    out = capsys.readouterr().out
    assert '"call_sid": "CA4"' in out and "CA3" not in out
