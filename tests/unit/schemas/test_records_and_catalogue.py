"""Topic records, the catalogue, and the checked-in JSON Schemas."""

from __future__ import annotations

import orjson
import pytest

from schemas.jsonschema import JSON_DIR, render
from schemas.records import (
    AudioFrameMeta,
    CallEvent,
    CallState,
    Decision,
    Score,
    Sentiment,
    Transcript,
)
from schemas.topics import ALL_TOPICS, by_name, prefixed

pytestmark = pytest.mark.unit


def test_catalogue_names_the_call_topics_and_the_workers_topic() -> None:
    names = [spec.name for spec in ALL_TOPICS]
    assert names == [
        "agentstream.audio",
        "agentstream.calls",
        "agentstream.transcripts",
        "agentstream.scores",
        "agentstream.decisions",
        "agentstream.deadletter",
        "agentstream.call_summaries",
        "agentstream.workers",
    ]
    assert all("call SID" in spec.key for spec in ALL_TOPICS[:-1])
    assert by_name("agentstream.workers").key == "worker id"
    assert by_name("agentstream.calls").value is CallEvent
    assert prefixed(by_name("agentstream.audio"), "t1.") == "t1.agentstream.audio"
    with pytest.raises(KeyError):
        by_name("nope")


def test_json_schemas_match_models() -> None:
    """Fails when a model changed without `make schemas`."""
    rendered = render()
    on_disk = {path.name: path.read_bytes() for path in JSON_DIR.glob("*.json")}
    assert set(on_disk) == set(rendered), "run `make schemas`"
    for name, data in rendered.items():
        assert on_disk[name] == data, f"{name} is stale: run `make schemas`"


def test_every_value_carries_schema_version() -> None:
    for spec in ALL_TOPICS:
        schema = orjson.loads(render()[f"{spec.name}.json"])
        assert "schema_version" in schema["properties"]


def test_audio_meta_round_trips_through_headers() -> None:
    meta = AudioFrameMeta(
        call_sid="CA1",
        stream_sid="MZ1",
        sequence_number=7,
        chunk=6,
        timestamp_ms=600,
        sample_rate_hz=8000,
        received_at_ms=1_700_000_000_000,
        offset_ms=600,
    )
    headers = meta.to_headers()
    assert all(isinstance(v, bytes) for _, v in headers)
    assert AudioFrameMeta.from_headers(headers) == meta
    assert AudioFrameMeta.from_headers(dict(headers)) == meta


def test_records_round_trip_as_json() -> None:
    transcript = Transcript(
        call_sid="CA1",
        utterance_id="CA1:0",
        utterance_index=0,
        is_final=True,
        text="hello",
        start_ms=0,
        end_ms=900,
        engine="whisper",
        speech_end_at_ms=1,
        produced_at_ms=2,
        latency_ms=1.0,
    )
    assert Transcript.from_bytes(transcript.to_bytes()) == transcript
    score = Score(
        call_sid="CA1",
        utterance_id="CA1:0",
        text="hello",
        sentiment=Sentiment(score=-0.5, label="negative", confidence=0.9),
        state=CallState(utterance_count=1),
        scored_at_ms=3,
        latency_ms=1.0,
    )
    assert Score.from_bytes(score.to_bytes()) == score
    decision = Decision(
        call_sid="CA1", decision="escalate", reason="angry", decided_at_ms=4, latency_ms=0.5
    )
    data = orjson.loads(decision.to_bytes())
    assert data["schema_version"] == 1
    assert "faust" not in decision.to_bytes().decode()
    event = CallEvent(kind="stop", call_sid="CA1", occurred_at_ms=5, stop_reason="disconnected")
    assert CallEvent.from_bytes(event.to_bytes()) == event


def test_sentiment_bounds_enforced() -> None:
    with pytest.raises(ValueError, match="less than or equal"):
        Sentiment(score=1.5, label="positive", confidence=1.0)
