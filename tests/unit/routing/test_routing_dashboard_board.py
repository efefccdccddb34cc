"""The dashboard engine: calls ranked by risk, details, drained updates, time-based eviction."""

from __future__ import annotations

import orjson
import pytest

from routing.dashboard.board import Board
from routing.dashboard.proximity import CallFacts, closeness, nearest
from schemas.records import Decision, Transcript
from tests.unit.routing.routing_fakes import T0, FakeClock, call_event, rules_with, score

pytestmark = pytest.mark.unit

MS = int(T0 * 1000)
RULES = rules_with(
    {"id": "wants-human", "kind": "keyword", "categories": ["human_request"], "target": "support"},
    {
        "id": "angry",
        "kind": "sentiment_rolling",
        "threshold": -0.5,
        "last_n": 2,
        "min_utterances": 2,
        "target": "support",
    },
    {"id": "quiet", "kind": "silence", "seconds": 20, "target": "support"},
)


def _transcript(call_sid: str, index: int, text: str, final: bool = True) -> Transcript:
    return Transcript(
        call_sid=call_sid,
        utterance_id=f"{call_sid}-u{index}",
        utterance_index=index,
        is_final=final,
        text=text,
        start_ms=1000 * index,
        end_ms=1000 * index + 800,
        engine="fake",
        speech_end_at_ms=MS,
        produced_at_ms=MS,
        latency_ms=1.0,
    )


def _escalation(call_sid: str) -> Decision:
    return Decision(
        call_sid=call_sid,
        decision="escalate",
        rule_id="wants-human",
        reason="caller asked for a human: 'get me a supervisor'",
        target_group="support",
        utterance_id=f"{call_sid}-u1",
        decided_at_ms=MS + 1500,
        latency_ms=2.0,
    )


def _board() -> tuple[Board, FakeClock]:
    clock = FakeClock()
    board = Board(RULES, clock=clock, linger_ms=30_000)
    for sid, caller in (("CAcalm", "+911"), ("CAangry", "+912"), ("CAsad", "+913")):
        board.apply_call_event(
            call_event("start", sid, clock.t, from_number=caller, tenant="acme", campaign="faq")
        )
    board.apply_transcript(_transcript("CAcalm", 0, "what time do you open"))
    board.apply_score(score("CAcalm", 0, 0.3, "what time do you open"))
    board.apply_transcript(_transcript("CAsad", 0, "this is not good"))
    board.apply_score(score("CAsad", 0, -0.4, "this is not good"))
    board.apply_score(score("CAsad", 1, -0.4, "still not good"))
    board.apply_transcript(_transcript("CAangry", 0, "you people are useless"))
    board.apply_score(score("CAangry", 0, -0.6, "you people are useless"))
    board.apply_transcript(_transcript("CAangry", 1, "get me a supervisor"))
    board.apply_score(
        score("CAangry", 1, -0.7, "get me a supervisor", categories=("human_request",))
    )
    board.apply_decision(_escalation("CAangry"))
    board.apply_transcript(_transcript("CAcalm", 1, "and on sun", final=False))
    return board, clock


def test_rows_are_ranked_escalated_first_then_by_risk() -> None:
    board, _ = _board()
    rows = board.rows()
    assert [r["call_sid"] for r in rows] == ["CAangry", "CAsad", "CAcalm"]
    angry, sad, calm = rows
    assert angry["escalation"]["rule_id"] == "wants-human"
    assert "supervisor" in angry["escalation"]["reason"]
    assert angry["risk"] == 1.0 and angry["keywords"] == {"human_request": 1}
    assert sad["near_rule"] == "angry" and sad["risk"] == pytest.approx(0.8)
    assert calm["risk"] < 0.1
    assert (calm["caller"], calm["tenant"], calm["campaign"]) == ("+911", "acme", "faq")
    orjson.dumps(rows)  # JSON-ready


def test_detail_has_transcript_sentiment_hits_and_decisions() -> None:
    board, _ = _board()
    detail = board.detail("CAangry")
    assert detail is not None
    assert [line["text"] for line in detail["transcript"]] == [
        "you people are useless",
        "get me a supervisor",
    ]
    assert [v for _, v in detail["sentiment_series"]] == [-0.6, -0.7]
    assert detail["keyword_hits"] == [
        {"category": "human_request", "matched": "human_request", "utterance": 1}
    ]
    assert detail["decisions"][0]["decision"] == "escalate"
    calm = board.detail("CAcalm")
    assert calm is not None and calm["partial"] == "and on sun" and calm["utterances"] == 1
    assert board.detail("nope") is None


def test_drain_sends_changed_rows_once() -> None:
    board, _ = _board()
    first = board.drain()
    assert first is not None and {r["call_sid"] for r in first.rows} == {
        "CAangry",
        "CAsad",
        "CAcalm",
    }
    assert board.drain() is None
    board.apply_score(score("CAcalm", 1, 0.5, "and on sunday"))
    board.apply_score(score("CAcalm", 1, 0.5, "and on sunday"))  # redelivered
    update = board.drain()
    assert update is not None and [r["call_sid"] for r in update.rows] == ["CAcalm"]
    assert update.version == first.version + 1
    # A partial transcript or a 'continue' changes the details only: no row is resent.
    board.apply_transcript(_transcript("CAsad", 2, "I am still wai", final=False))
    update = board.drain()
    assert update is not None and update.rows == [] and update.touched == ["CAsad"]


def test_silence_raises_risk_with_time_and_ended_calls_leave() -> None:
    board, clock = _board()
    board.drain()
    clock.advance(15)
    board.tick()
    update = board.drain()
    assert update is not None
    calm = next(r for r in update.rows if r["call_sid"] == "CAcalm")
    assert calm["near_rule"] == "quiet" and calm["risk"] == 0.78  # 15.5 s of 20
    board.apply_call_event(call_event("stop", "CAcalm", clock.t, stop_reason="callended"))
    assert board.rows()[-1]["call_sid"] == "CAcalm" and not board.rows()[-1]["live"]
    clock.advance(31)
    board.tick()
    update = board.drain()
    assert update is not None and "CAcalm" in update.removed
    assert "CAcalm" not in board.calls


def test_board_keeps_bounded_history() -> None:
    clock = FakeClock()
    board = Board(RULES, clock=clock, max_lines=5, max_decisions=3)
    for i in range(20):
        board.apply_transcript(_transcript("CA1", i, f"line {i}"))
        board.apply_score(score("CA1", i, 0.0, f"line {i}"))
    detail = board.detail("CA1")
    assert detail is not None
    assert [line["index"] for line in detail["transcript"]] == [15, 16, 17, 18, 19]
    assert len(detail["sentiment_series"]) == 5


def test_closeness_of_each_rule_kind() -> None:
    facts = CallFacts(
        sentiments=[0.0, -0.25],
        keyword_hits={"complaint": 1},
        repeat_count=1,
        live=True,
        started_at_ms=0,
        last_speech_at_ms=5000,
        now_ms=15_000,
    )
    rules = rules_with(
        {"id": "s", "kind": "sentiment_single", "threshold": -0.5, "target": "support"},
        {
            "id": "k",
            "kind": "keyword",
            "categories": ["complaint"],
            "min_hits": 2,
            "target": "support",
        },
        {"id": "r", "kind": "repetition", "count": 4, "target": "support"},
        {"id": "q", "kind": "silence", "seconds": 20, "target": "support"},
        {"id": "m", "kind": "max_duration", "seconds": 60, "target": "support"},
        {"id": "d", "kind": "dtmf", "digits": ["0"], "target": "support"},
    ).default.rules
    values = {rule.id: round(closeness(rule, facts), 3) for rule in rules}
    assert values == {"s": 0.5, "k": 0.5, "r": 0.25, "q": 0.5, "m": 0.25, "d": 0.0}
    assert nearest(rules, facts) == ("s", 0.5)


def test_history_read_at_start_does_not_linger() -> None:
    """A call that ended long ago (read back from the topics) leaves at the first tick."""
    clock = FakeClock()
    board = Board(RULES, clock=clock, linger_ms=60_000)
    old = clock.t - 3000
    board.apply_call_event(call_event("start", "CAold", old))
    board.apply_call_event(call_event("stop", "CAold", old + 30, stop_reason="callended"))
    board.apply_call_event(call_event("start", "CAnow", clock.t))
    board.tick()
    assert set(board.calls) == {"CAnow"}
