"""Silence and max-duration rules measure the call's audio time (watermarks), not wall time."""

from __future__ import annotations

from typing import Literal

import pytest

from routing.evaluator import Evaluator
from schemas.records import CallState, Score, Sentiment
from tests.unit.routing.routing_fakes import FakeClock, call_event, rules_with, score

pytestmark = pytest.mark.unit

QUIET = {"id": "quiet", "kind": "silence", "seconds": 10, "target": "support"}
LONG = {"id": "long", "kind": "max_duration", "seconds": 300, "target": "support"}


def make(*rules: dict[str, object]) -> tuple[Evaluator, FakeClock]:
    clock = FakeClock()
    return Evaluator(rules_with(*rules), clock=clock, max_score_age_s=600), clock


def progress(
    call_sid: str, audio_ms: int, clock: FakeClock, kind: Literal["progress", "end"] = "progress"
) -> Score:
    now = int(clock() * 1000)
    return Score(
        call_sid=call_sid,
        utterance_id=f"{call_sid}-{kind}-{audio_ms}",
        utterance_index=audio_ms,
        text="",
        start_ms=audio_ms,
        end_ms=audio_ms,
        sentiment=Sentiment(score=0.0, label="neutral", confidence=0.0),
        state=CallState(),
        scored_at_ms=now,
        latency_ms=0.0,
        marker=kind,
    )


def spoken(call_sid: str, index: int, start_ms: int, end_ms: int, clock: FakeClock) -> Score:
    s = score(call_sid, index, scored_at_ms=int(clock() * 1000))
    return s.model_copy(update={"start_ms": start_ms, "end_ms": end_ms})


def test_silence_fires_at_exactly_the_limit_of_analysed_audio() -> None:
    ev, clock = make(QUIET)
    ev.on_call_event(call_event("start", "c", clock()))
    assert ev.on_progress(progress("c", 9_999, clock)) is None
    d = ev.on_progress(progress("c", 10_000, clock))
    assert d is not None and d.decision == "escalate" and d.rule_id == "quiet"
    assert "silent for 10 s" in d.reason
    assert ev.on_progress(progress("c", 20_000, clock)) is None  # once


def test_wall_clock_time_alone_never_makes_a_caller_silent() -> None:
    """A stalled pipeline or broker: no watermark arrives, however long it lasts."""
    ev, clock = make(QUIET, LONG)
    ev.on_call_event(call_event("start", "c", clock()))
    ev.on_score(spoken("c", 1, 500, 2_000, clock))
    ev.on_progress(progress("c", 3_000, clock))
    clock.advance(3_600)
    assert ev.tick() == [] and not ev.due_now()
    # the backlog then arrives: the caller kept talking through the stall
    assert ev.on_score(spoken("c", 2, 3_500, 9_000, clock)).decision == "continue"
    assert ev.on_progress(progress("c", 12_000, clock)) is None  # 3 s quiet, not an hour


def test_silence_counts_from_the_last_words_heard() -> None:
    ev, clock = make(QUIET)
    ev.on_call_event(call_event("start", "c", clock()))
    ev.on_progress(progress("c", 8_000, clock))
    ev.on_score(spoken("c", 1, 8_000, 9_000, clock))
    assert ev.on_progress(progress("c", 18_999, clock)) is None
    assert ev.on_progress(progress("c", 19_000, clock)) is not None


def test_a_stopped_stream_is_not_a_silent_caller() -> None:
    ev, clock = make(QUIET)
    ev.on_call_event(call_event("start", "d", clock()))
    ev.on_call_event(call_event("stop", "d", clock() + 1))
    assert ev.on_progress(progress("d", 60_000, clock, "end")) is None


def test_max_duration_is_the_audio_analysed_since_stream_start() -> None:
    ev, clock = make(LONG)
    ev.on_call_event(call_event("start", "c", clock() - 1_000))  # wall clock says 1000 s ago
    ev.on_score(spoken("c", 1, 0, 1_000, clock))
    assert ev.on_progress(progress("c", 299_999, clock)) is None
    d = ev.on_progress(progress("c", 300_000, clock))
    assert d is not None and d.rule_id == "long" and "300 s" in d.reason


def test_replayed_old_watermarks_decide_nothing() -> None:
    ev, clock = make(QUIET)
    ev.on_call_event(call_event("start", "c", clock()))
    old = progress("c", 50_000, clock)
    clock.advance(601)
    assert ev.on_progress(old) is None
    assert ev.calls["c"].audio_ms == 50_000  # remembered, not decided


def gap(call_sid: str, start_ms: int, end_ms: int, clock: FakeClock, count: int = 1) -> Score:
    """An utterance heard but not transcribed (the ASR worker was over its backlog bound)."""
    return progress(call_sid, end_ms, clock).model_copy(
        update={
            "marker": "gap",
            "start_ms": start_ms,
            "utterance_index": start_ms,
            "utterance_id": f"{call_sid}-gap-{start_ms}",
            "state": CallState(untranscribed_utterances=count),
        }
    )


def test_a_gap_is_speech_for_the_silence_rule() -> None:
    ev, clock = make(QUIET)
    ev.on_call_event(call_event("start", "c", clock()))
    ev.on_score(spoken("c", 1, 500, 2_000, clock))
    assert ev.on_progress(gap("c", 3_000, 11_000, clock)) is None  # talking, not silent
    assert ev.on_progress(progress("c", 12_000, clock)) is None  # 1 s after the gap
    d = ev.on_progress(progress("c", 21_000, clock))
    assert d is not None and d.rule_id == "quiet"


def test_decisions_after_a_gap_say_they_were_made_on_part_of_the_call() -> None:
    ev, clock = make(QUIET)
    ev.on_call_event(call_event("start", "c", clock()))
    before = ev.on_score(spoken("c", 1, 500, 2_000, clock))
    assert before is not None and before.complete
    ev.on_progress(gap("c", 3_000, 5_000, clock))
    # the next score's state may predate the gap (scored from an older entry): still incomplete
    after = ev.on_score(spoken("c", 2, 6_000, 7_000, clock))
    assert after is not None and not after.complete
    d = ev.on_progress(progress("c", 17_000, clock))
    assert d is not None and d.decision == "escalate" and not d.complete


def test_decisions_from_analysis_over_the_backlog_bound_are_incomplete() -> None:
    ev, clock = make(QUIET)
    ev.on_call_event(call_event("start", "c", clock()))
    late = spoken("c", 1, 500, 2_000, clock).model_copy(update={"behind": True})
    d = ev.on_score(late)
    assert d is not None and not d.complete
    # the worker caught up: decisions are whole again
    d = ev.on_score(spoken("c", 2, 3_000, 4_000, clock))
    assert d is not None and d.complete
    behind_progress = progress("c", 14_000, clock).model_copy(update={"behind": True})
    d = ev.on_progress(behind_progress)
    assert d is not None and d.rule_id == "quiet" and not d.complete
