"""Summaries the simulator builds from topic records (no broker: records made by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentstream.sim.calls import CallSpec, SimOptions, plan_calls
from agentstream.sim.results import (
    PipelineOutput,
    TopicWatcher,
    aggregate,
    percentiles,
    render_summary,
    summary_rows,
)
from schemas.records import CallState, Decision, Score, Sentiment, Transcript

pytestmark = pytest.mark.unit


def _transcript(sid: str, n: int, text: str) -> Transcript:
    return Transcript(
        call_sid=sid,
        utterance_id=f"{sid}-{n}",
        utterance_index=n,
        is_final=True,
        text=text,
        start_ms=n * 1000,
        end_ms=n * 1000 + 800,
        engine="fake",
        speech_end_at_ms=10_000 + n * 1000,
        produced_at_ms=10_600 + n * 1000,
        latency_ms=600,
    )


def _score(sid: str, n: int, value: float) -> Score:
    label = "negative" if value < -0.3 else "neutral"
    return Score(
        call_sid=sid,
        utterance_id=f"{sid}-{n}",
        text="x",
        sentiment=Sentiment(score=value, label=label, confidence=0.9),
        state=CallState(sentiment_mean_last_n=value),
        scored_at_ms=10_700 + n * 1000,
        latency_ms=100,
    )


def _decision(sid: str, n: int, kind: str) -> Decision:
    return Decision(
        call_sid=sid,
        decision=kind,
        rule_id="wants-human" if kind == "escalate" else None,
        reason="r",
        utterance_id=f"{sid}-{n}",
        speech_end_at_ms=10_000 + n * 1000,
        decided_at_ms=10_750 + n * 1000,
        latency_ms=50,
    )


def test_settled_needs_every_final_scored_and_decided() -> None:
    records = PipelineOutput()
    assert not records.settled()
    records.transcripts.append(_transcript("A", 0, "hello"))
    assert not records.settled()
    records.scores.append(_score("A", 0, 0.1))
    assert not records.settled()
    records.decisions.append(_decision("A", 0, "continue"))
    assert records.settled()
    records.transcripts.append(_transcript("A", 1, "more"))
    assert not records.settled()
    records.decisions.append(_decision("A", 1, "escalate"))
    assert records.settled(), "an escalation settles the call"
    assert records.decision is not None and records.decision.decision == "escalate"


def test_percentiles_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    got = percentiles(values)
    assert (got["p50"], got["p95"], got["p99"], got["max"]) == (50.0, 95.0, 99.0, 100.0)
    assert percentiles([])["p50"] is None


def test_summary_rows_join_run_outcome_and_records(tmp_path: Path) -> None:
    specs = [
        CallSpec("calm", tmp_path / "a.wav", expected="continue"),
        CallSpec("human", tmp_path / "b.wav", expected="escalate"),
    ]
    runs = plan_calls(specs, 2, SimOptions())
    calm, human = runs
    calm.passthru_status, human.passthru_status = 200, 200  # human: answered too early
    watcher = TopicWatcher("unused:9092")
    watcher.watch([calm.call_sid, human.call_sid])
    c, h = watcher.calls[calm.call_sid], watcher.calls[human.call_sid]
    c.transcripts.append(_transcript(calm.call_sid, 0, "fine thanks"))
    c.scores.append(_score(calm.call_sid, 0, 0.2))
    c.decisions.append(_decision(calm.call_sid, 0, "continue"))
    h.transcripts += [_transcript(human.call_sid, 0, "hi"), _transcript(human.call_sid, 1, "human")]
    h.scores += [_score(human.call_sid, 0, 0.0), _score(human.call_sid, 1, -0.6)]
    h.decisions += [
        _decision(human.call_sid, 0, "continue"),
        _decision(human.call_sid, 1, "escalate"),
    ]
    rows = summary_rows(runs, watcher)
    assert rows[0]["ok"] is True and rows[0]["decision"] == "continue"
    assert rows[1]["decision"] == "escalate" and rows[1]["rule_id"] == "wants-human"
    assert rows[1]["ok"] is False, "the Passthru answer, not the topic, decides the check"
    assert rows[1]["transcript"] == "hi | human"
    assert rows[1]["sentiment"]["min"] == -0.6
    assert rows[1]["latency_ms"]["speech_end_to_transcript"]["p50"] == 600.0
    assert rows[1]["latency_ms"]["speech_end_to_decision"]["max"] == 750.0
    assert [u["decision"] for u in rows[1]["utterance_detail"]] == ["continue", "escalate"]
    totals = aggregate(rows, watcher)
    assert (totals["checked"], totals["matched"], totals["decided"]) == (2, 1, 2)
    assert totals["latency_ms"]["transcript_to_score"]["n"] == 3
    assert render_summary(rows).row_count == 2
