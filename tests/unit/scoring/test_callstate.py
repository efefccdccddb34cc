"""The pure call-state fold."""

from __future__ import annotations

import pytest

from analytics.scoring.callstate import FoldParams, fold_event, fold_utterance, similarity, slope
from schemas.records import CallEvent, CallState, KeywordHit

pytestmark = pytest.mark.unit

P = FoldParams(window_n=3, ewma_alpha=0.5, repeat_similarity=0.8, recent_texts=2)


def feed(
    state: CallState, score: float, text: str, start: int, end: int, kw: tuple[str, ...] = ()
) -> CallState:
    hits = [KeywordHit(category=c, phrase=c, matched=c, span=(0, 1)) for c in kw]
    return fold_utterance(
        state, score=score, keywords=hits, text=text, start_ms=start, end_ms=end, params=P
    )


def test_fold_sequence() -> None:
    s = CallState()
    s = feed(s, 0.5, "hello I need help with my loan", 0, 2000)
    assert s.utterance_count == 1
    assert s.sentiment_ewma == 0.5 and s.sentiment_min == 0.5 and s.sentiment_trend == 0.0
    assert s.silence_since_speech_ms == 0 and s.talk_time_ms == 2000
    s = feed(s, -0.5, "this is not working at all", 3000, 4500, ("complaint",))
    s = feed(s, -0.9, "let me talk to a human", 7000, 8000, ("human_request", "complaint"))
    s = feed(s, -0.7, "a human please", 8500, 9000, ("human_request",))
    assert s.utterance_count == 4
    assert s.sentiment_last_n == [-0.5, -0.9, -0.7]
    assert s.sentiment_mean_last_n == pytest.approx(-0.7, abs=1e-4)
    # ewma: 0.5 -> 0.0 -> -0.45 -> -0.575
    assert s.sentiment_ewma == pytest.approx(-0.575, abs=1e-4)
    assert s.sentiment_min == -0.9
    assert s.sentiment_trend == pytest.approx(slope([-0.5, -0.9, -0.7]), abs=1e-4)
    assert s.keyword_hits == {"complaint": 2, "human_request": 2}
    assert s.talk_time_ms == 2000 + 1500 + 1000 + 500
    assert s.last_speech_end_ms == 9000
    assert s.silence_since_speech_ms == 500
    assert s.recent_texts == ["let me talk to a human", "a human please"]


def test_repeats_count_consecutive_similar_utterances() -> None:
    s = CallState()
    s = feed(s, 0.0, "I want to check my balance", 0, 1000)
    s = feed(s, 0.0, "I want to check my balance.", 1500, 2500)
    assert s.repeat_count == 1
    s = feed(s, 0.0, "i want to check my balanse", 3000, 4000)
    assert s.repeat_count == 2
    s = feed(s, 0.0, "what are your opening hours", 5000, 6000)
    assert s.repeat_count == 0


def test_similarity() -> None:
    assert similarity("Agent!", "agent") == 1.0
    assert similarity("book an appointment", "what is the weather") < 0.5
    assert similarity("", "x") == 0.0


def test_slope() -> None:
    assert slope([0.0, 0.5, 1.0]) == pytest.approx(0.5)
    assert slope([1.0]) == 0.0


def test_events() -> None:
    s = CallState()
    start = CallEvent(kind="start", call_sid="c", occurred_at_ms=1000)
    s = fold_event(s, start)
    assert s.started_at_ms == 1000
    assert fold_event(s, start.model_copy(update={"occurred_at_ms": 5})).started_at_ms == 1000
    s = fold_event(s, CallEvent(kind="dtmf", call_sid="c", occurred_at_ms=2000, dtmf_digit="0"))
    assert s.last_dtmf == "0"
    assert fold_event(s, CallEvent(kind="mark", call_sid="c", occurred_at_ms=3)) == s
