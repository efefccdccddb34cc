"""Scoring passes watermark transcripts on as marker scores, behind the call's utterances."""

from __future__ import annotations

import pytest

from analytics.asr.markers import marker_transcript
from analytics.heartbeat import HeartbeatState
from analytics.scoring.agent import marker_scores
from analytics.scoring.stage import ScoringTableEntry, SourceRecord
from schemas.records import CallState

pytestmark = pytest.mark.unit

TOPIC = "t.agentstream.transcripts"


def _record(offset: int, value: bytes, topic: str = TOPIC) -> SourceRecord:
    return SourceRecord(topic, 3, offset, b"CA1", value)


def test_markers_become_marker_scores_with_the_calls_state() -> None:
    end = marker_transcript(
        "end",
        call_sid="CA1",
        stream_sid="S1",
        tenant="acme",
        campaign="col",
        audio_ms=9_000,
        received_at_ms=1_000,
        produced_at_ms=1_200,
        engine="fake",
    )
    utterance = end.model_copy(update={"marker": None, "text": "hello", "is_final": True})
    state = CallState(utterance_count=4)
    entries = {b"CA1": (ScoringTableEntry(state=state), 3)}
    records = [_record(1, utterance.to_bytes()), _record(2, end.to_bytes()), _record(3, b"{bad")]
    [score] = marker_scores(records, TOPIC, entries, lambda key, p: ScoringTableEntry(), 1_300)
    assert score.marker == "end" and score.end_ms == 9_000 and score.text == ""
    assert score.speech_end_at_ms == 1_000 and score.state.utterance_count == 4
    assert (score.tenant, score.campaign, score.stream_sid) == ("acme", "col", "S1")


def _gap(start_ms: int, end_ms: int) -> bytes:
    return marker_transcript(
        "gap",
        call_sid="CA1",
        stream_sid="S1",
        tenant="acme",
        campaign="col",
        audio_ms=end_ms,
        start_ms=start_ms,
        received_at_ms=1_000,
        produced_at_ms=1_200,
        engine="fake",
    ).to_bytes()


def test_a_gap_counts_once_in_the_calls_state_and_the_entry_is_saved() -> None:
    entries: dict[bytes, tuple[ScoringTableEntry, int]] = {}
    saved = ScoringTableEntry(state=CallState(utterance_count=2), partition=3)
    records = [_record(1, _gap(2_000, 3_500)), _record(2, _gap(5_000, 6_000))]
    first, second = marker_scores(records, TOPIC, entries, lambda key, p: saved, 1_300)
    assert (first.marker, first.start_ms, first.end_ms) == ("gap", 2_000, 3_500)
    assert first.state.untranscribed_utterances == 1
    assert second.state.untranscribed_utterances == 2
    assert entries[b"CA1"][0].state.untranscribed_utterances == 2  # written to the table
    assert entries[b"CA1"][0].state.utterance_count == 2  # nothing else changes
    # the same gaps read again (a replay after a restart) count nothing more
    [again] = marker_scores(records[1:], TOPIC, entries, lambda key, p: saved, 1_400)
    assert again.state.untranscribed_utterances == 2


def test_progress_markers_leave_the_state_alone() -> None:
    entries: dict[bytes, tuple[ScoringTableEntry, int]] = {}
    progress = marker_transcript(
        "progress",
        call_sid="CA1",
        stream_sid="S1",
        tenant="acme",
        campaign="col",
        audio_ms=4_000,
        received_at_ms=1_000,
        produced_at_ms=1_200,
        engine="fake",
    )
    [score] = marker_scores(
        [_record(1, progress.to_bytes())], TOPIC, entries, lambda key, p: ScoringTableEntry(), 0
    )
    assert score.state.untranscribed_utterances == 0 and entries == {}


def test_call_events_and_utterances_pass_nothing() -> None:
    records = [_record(1, b'{"kind":"stop","marker":"end"}', topic="t.agentstream.calls")]
    assert marker_scores(records, TOPIC, {}, lambda key, p: ScoringTableEntry(), 0) == []


def test_a_worker_is_ready_with_models_loaded_and_an_assignment() -> None:
    loaded = {"yes": False}
    state = HeartbeatState("w1", "app", 8, 2.0, lambda: loaded["yes"], clock=lambda: 5.0)
    assert state.record().state == "starting"
    state.on_assignment([3, 1])
    assert state.record().state == "starting"  # models still loading
    loaded["yes"] = True
    record = state.record()
    assert record.state == "ready" and record.audio_partitions == [1, 3]
    assert record.partitions_total == 8 and record.interval_ms == 2000 and record.sent_at_ms == 5000
    state.stopping = True
    assert state.record().state == "stopping"
