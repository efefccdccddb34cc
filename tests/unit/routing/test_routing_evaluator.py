"""The rule evaluator, without any framework: every rule kind, priorities, edges, dedup."""

from __future__ import annotations

import pytest

from routing.evaluator import Evaluator
from schemas.records import CallState, Decision, Score
from tests.unit.routing.routing_fakes import T0, FakeClock, call_event, rules_with, score

pytestmark = pytest.mark.unit


def make(*rules: dict[str, object], **kwargs: object) -> tuple[Evaluator, FakeClock]:
    clock = FakeClock()
    return Evaluator(rules_with(*rules), clock=clock, **kwargs), clock  # type: ignore[arg-type]


def rolling(**kw: object) -> dict[str, object]:
    return {"id": "angry", "kind": "sentiment_rolling", "target": "support", **kw}


# --- sentiment_rolling ----------------------------------------------------------------------------


def test_rolling_fires_when_mean_of_last_n_is_below_threshold() -> None:
    ev, _ = make(rolling(threshold=-0.5, last_n=3, min_utterances=2))
    assert ev.on_score(score("c", 1, -0.6)).decision == "continue"  # 1 < min_utterances
    d = ev.on_score(score("c", 2, -0.7))
    assert d is not None and d.decision == "escalate"
    assert d.rule_id == "angry" and d.target_group == "support"
    assert [e.utterance_id for e in d.evidence] == ["c-u1", "c-u2"]
    assert "below -0.5" in d.reason


def test_rolling_threshold_edge_is_strictly_below() -> None:
    ev, _ = make(rolling(threshold=-0.5, last_n=2, min_utterances=2))
    ev.on_score(score("c", 1, -0.5))
    assert ev.on_score(score("c", 2, -0.5)).decision == "continue"  # mean == threshold
    assert ev.on_score(score("c", 3, -0.51)).decision == "escalate"


def test_rolling_uses_only_the_last_n() -> None:
    ev, _ = make(rolling(threshold=-0.5, last_n=2, min_utterances=2))
    ev.on_score(score("c", 1, -1.0))
    ev.on_score(score("c", 2, 0.9))  # mean(-1, 0.9) = -0.05
    assert ev.on_score(score("c", 3, 0.0)).decision == "continue"  # mean(0.9, 0) = 0.45
    d = ev.on_score(score("c", 4, -1.0))  # mean(0, -1) = -0.5: not below
    assert d.decision == "continue"
    assert ev.on_score(score("c", 5, -0.2)).decision == "escalate"  # mean(-1, -0.2) = -0.6


def test_rolling_time_window_drops_old_utterances() -> None:
    ev, _ = make(rolling(threshold=-0.5, last_n=None, window_s=10, min_utterances=2))
    base = int(T0 * 1000)
    ev.on_score(score("c", 1, -0.9, speech_end_at_ms=base))
    # 10.001 s later: the first utterance is out of the window, only one value left
    d = ev.on_score(score("c", 2, -0.9, speech_end_at_ms=base + 10_001))
    assert d.decision == "continue"
    # exactly 10 s after the second: both in
    d = ev.on_score(score("c", 3, -0.9, speech_end_at_ms=base + 20_001))
    assert d.decision == "escalate"
    assert [e.utterance_id for e in d.evidence] == ["c-u2", "c-u3"]


def test_rolling_falls_back_to_scoring_state_after_restart() -> None:
    ev, _ = make(rolling(threshold=-0.5, last_n=3, min_utterances=3))
    state = CallState(utterance_count=5, sentiment_last_n=[-0.8, -0.7, -0.9])
    assert ev.on_score(score("c", 5, -0.9, state=state)).decision == "escalate"


# --- sentiment_single -----------------------------------------------------------------------------


def test_single_threshold_and_confidence_edges() -> None:
    rule = {"id": "one", "kind": "sentiment_single", "threshold": -0.8, "target": "support"}
    ev, _ = make({**rule, "min_confidence": 0.7})
    assert ev.on_score(score("a", 1, -0.8)).decision == "continue"  # equal: not below
    assert ev.on_score(score("b", 1, -0.81, confidence=0.69)).decision == "continue"
    d = ev.on_score(score("c", 1, -0.81, confidence=0.7, text="you are useless"))
    assert d.decision == "escalate" and "useless" in d.reason
    assert [e.text for e in d.evidence] == ["you are useless"]


# --- keyword --------------------------------------------------------------------------------------


def test_keyword_fires_on_a_category_hit() -> None:
    ev, _ = make(
        {"id": "human", "kind": "keyword", "categories": ["human_request"], "target": "support"}
    )
    assert ev.on_score(score("c", 1, 0.1, categories=("complaint",))).decision == "continue"
    d = ev.on_score(score("c", 2, 0.1, "let me talk to a human", categories=("human_request",)))
    assert d.decision == "escalate" and d.rule_id == "human"
    assert "human_request" in d.reason and d.evidence[0].text == "let me talk to a human"


def test_keyword_min_hits_counts_across_the_call_and_categories() -> None:
    rule = {
        "id": "fed-up",
        "kind": "keyword",
        "categories": ["complaint", "legal_threat"],
        "min_hits": 3,
        "target": "support",
    }
    ev, _ = make(rule)
    running: dict[str, int] = {}
    for n, category in enumerate(("complaint", "human_request", "legal_threat", "complaint"), 1):
        running[category] = running.get(category, 0) + 1  # as the scoring worker folds them
        d = ev.on_score(
            score("c", n, categories=(category,), state=CallState(keyword_hits=running))
        )
        assert d is not None and d.decision == ("escalate" if n == 4 else "continue")
    assert d.evidence[-1].utterance_id == "c-u4" and "3 hits" in d.reason


def test_keyword_counts_have_one_owner_the_scoring_state() -> None:
    """The utterance's own hits are evidence; the count is the scoring worker's, never summed
    or maxed with a count of routing's own."""
    ev, _ = make({"id": "k", "kind": "keyword", "categories": ["complaint"], "target": "support"})
    s = score("c", 1, categories=("complaint",), state=CallState(keyword_hits={}))
    assert ev.on_score(s).decision == "continue"  # e.g. a negated mention analytics dropped


def test_keyword_uses_scoring_state_counts() -> None:
    ev, _ = make(
        {
            "id": "k",
            "kind": "keyword",
            "categories": ["complaint"],
            "min_hits": 2,
            "target": "support",
        }
    )
    state = CallState(keyword_hits={"complaint": 2})
    assert ev.on_score(score("c", 7, state=state)).decision == "escalate"


# --- dtmf -----------------------------------------------------------------------------------------


def test_dtmf_from_the_stream_and_from_passthru_digits() -> None:
    ev, clock = make({"id": "zero", "kind": "dtmf", "digits": ["0"], "target": "support"})
    assert ev.on_call_event(call_event("dtmf", "a", clock(), dtmf_digit="5")) is None
    d = ev.on_call_event(call_event("dtmf", "a", clock(), dtmf_digit="0"))
    assert d is not None and d.decision == "escalate" and "pressed 0" in d.reason
    assert ev.on_digits("b", "12") is None
    d2 = ev.on_digits("b", "0")
    assert d2 is not None and d2.rule_id == "zero" and d2.utterance_id is None


def test_dtmf_from_score_state() -> None:
    ev, _ = make({"id": "nine", "kind": "dtmf", "digits": ["9"], "target": "support"})
    assert ev.on_score(score("c", 1, state=CallState(last_dtmf="9"))).decision == "escalate"


# --- silence / max_duration: audio time, see test_routing_audio_time.py


# --- repetition -----------------------------------------------------------------------------------


def test_repetition_compares_the_scoring_count_for_this_rule() -> None:
    ev, _ = make({"id": "loop", "kind": "repetition", "count": 2, "target": "support"})
    said = ["change my plan", "I want to change my plan", "change my plane please"]
    for n, text in enumerate(said):
        state = CallState(repeat_counts={"loop": n})  # counted by analytics at the similarity
        d = ev.on_score(score("c", n + 1, text=text, state=state))
        assert d is not None and d.decision == ("escalate" if n == 2 else "continue")
    assert [e.text for e in d.evidence] == said and "2 times" in d.reason


def test_repetition_is_broken_by_a_different_utterance() -> None:
    ev, _ = make({"id": "loop", "kind": "repetition", "count": 2, "target": "support"})
    ev.on_score(score("c", 1, text="where is my order"))
    ev.on_score(score("c", 2, text="where is my order"))
    ev.on_score(score("c", 3, text="thank you very much"))
    assert ev.on_score(score("c", 4, text="thank you very much")).decision == "continue"


def test_repetition_from_scoring_state() -> None:
    ev, _ = make({"id": "loop", "kind": "repetition", "count": 2, "target": "support"})
    repeats = CallState(repeat_counts={"loop": 2})
    assert ev.on_score(score("c", 9, state=repeats)).decision == "escalate"
    # another rule's count (another similarity) is not this rule's, and routing does not
    # compare texts itself: identical texts with no count from analytics do not fire
    other = CallState(repeat_count=5, repeat_counts={"other-rule": 5})
    assert ev.on_score(score("d", 1, state=other)).decision == "continue"
    for n in range(1, 4):
        assert ev.on_score(score("e", n, text="where is my order")).decision == "continue"


# --- priorities, dedup, layering ------------------------------------------------------------------


def test_lowest_priority_number_wins_ties_keep_file_order() -> None:
    ev, _ = make(
        {
            "id": "human",
            "kind": "keyword",
            "categories": ["human_request"],
            "priority": 20,
            "target": "support",
        },
        {
            "id": "legal",
            "kind": "keyword",
            "categories": ["legal_threat"],
            "priority": 5,
            "target": "legal",
        },
        {
            "id": "legal-too",
            "kind": "keyword",
            "categories": ["legal_threat"],
            "priority": 5,
            "target": "support",
        },
    )
    d = ev.on_score(score("c", 1, categories=("human_request", "legal_threat")))
    assert d.rule_id == "legal" and d.target_group == "legal"


def test_disabled_rules_never_fire() -> None:
    ev, _ = make(
        {
            "id": "k",
            "kind": "keyword",
            "categories": ["complaint"],
            "target": "support",
            "enabled": False,
        }
    )
    assert ev.on_score(score("c", 1, categories=("complaint",))).decision == "continue"


def test_at_most_one_escalation_and_no_duplicate_on_replay() -> None:
    ev, _ = make({"id": "k", "kind": "keyword", "categories": ["complaint"], "target": "support"})
    s1 = score("c", 1)
    assert ev.on_score(s1).decision == "continue"
    assert ev.on_score(s1) is None  # the same utterance replayed
    assert ev.on_score(score("c", 2, categories=("complaint",))).decision == "escalate"
    assert ev.on_score(score("c", 3, categories=("complaint",))) is None


def test_state_rebuilt_from_decisions_prevents_a_second_escalation() -> None:
    ev, _ = make({"id": "k", "kind": "keyword", "categories": ["complaint"], "target": "support"})
    ev.note_decision(
        Decision(
            call_sid="c",
            decision="escalate",
            rule_id="k",
            reason="x",
            decided_at_ms=1,
            latency_ms=0.0,
        )
    )
    ev.note_decision(
        Decision(
            call_sid="d",
            decision="continue",
            reason="x",
            utterance_id="d-u1",
            decided_at_ms=1,
            latency_ms=0.0,
        )
    )
    assert ev.is_escalated("c") and not ev.is_escalated("d")
    assert ev.on_score(score("c", 2, categories=("complaint",))) is None
    assert ev.on_score(score("d", 1, categories=("complaint",))) is None  # already decided


def test_old_scores_are_folded_in_but_not_decided() -> None:
    ev, clock = make(
        {
            "id": "k",
            "kind": "keyword",
            "categories": ["complaint"],
            "min_hits": 2,
            "target": "support",
        },
        max_score_age_s=60,
    )
    old = int((clock() - 61) * 1000)
    assert ev.on_score(score("c", 1, categories=("complaint",), scored_at_ms=old)) is None
    two = CallState(keyword_hits={"complaint": 2})
    assert ev.on_score(score("c", 2, categories=("complaint",), state=two)).decision == "escalate"


def at(s: Score, start_ms: int, stream_sid: str = "ST1", uid: str | None = None) -> Score:
    """``s`` at an audio position, with the id the ASR stage derives from it."""
    return s.model_copy(
        update={
            "start_ms": start_ms,
            "end_ms": start_ms + 800,
            "stream_sid": stream_sid,
            "utterance_id": uid or f"{s.call_sid}-{start_ms}",
            "utterance_index": start_ms,
        }
    )


def test_replays_by_id_or_audio_position_decide_nothing_and_count_nothing() -> None:
    ev, _ = make(
        {
            "id": "k",
            "kind": "keyword",
            "categories": ["complaint"],
            "min_hits": 3,
            "target": "support",
        }
    )
    scores = [
        at(
            score(
                "c", n, categories=("complaint",), state=CallState(keyword_hits={"complaint": n})
            ),
            n * 2000,
        )
        for n in (1, 2)
    ]
    assert [ev.on_score(s).decision for s in scores] == ["continue", "continue"]  # type: ignore[union-attr]
    record = ev.calls["c"]
    # the same score twice, a replay of the partition, an utterance re-cut 16 ms later by a
    # restarted worker (new id, same audio) carrying a state that would fire: nothing
    recut = at(score("c", 9, state=CallState(keyword_hits={"complaint": 3})), 4016)
    for replay in (scores[-1], *scores, recut):
        assert ev.on_score(replay) is None
    assert record.state.keyword_hits == {"complaint": 2} and len(record.history) == 2
    assert not ev.is_escalated("c")
    # new audio counts; a second stream of the same call restarts positions at 0
    ev2, _ = make()
    ev2.on_score(at(score("d", 1), 5000))
    assert ev2.on_score(at(score("d", 2), 0, stream_sid="ST2")) is not None


def test_latency_and_speech_end_are_carried() -> None:
    ev, clock = make()
    s = score("c", 1, scored_at_ms=int(clock() * 1000) - 7, speech_end_at_ms=123)
    d = ev.on_score(s)
    assert d is not None and d.latency_ms == pytest.approx(7.0)
    assert d.speech_end_at_ms == 123 and d.utterance_id == "c-u1"


def test_tenant_and_campaign_layers_and_reload_keep_state() -> None:
    clock = FakeClock()
    rules = rules_with(
        {"id": "k", "kind": "keyword", "categories": ["complaint"], "target": "support"},
        tenants={
            "acme": {
                "campaigns": {
                    "col": {
                        "rules": [
                            {
                                "id": "k",
                                "kind": "keyword",
                                "categories": ["complaint"],
                                "target": "legal",
                            }
                        ]
                    }
                }
            }
        },
    )
    ev = Evaluator(rules, clock=clock)
    d = ev.on_score(score("c", 1, categories=("complaint",), tenant="acme", campaign="col"))
    assert d.target_group == "legal" and d.tenant == "acme"
    d2 = ev.on_score(score("x", 1, categories=("complaint",), tenant="acme", campaign="other"))
    assert d2.target_group == "support"
    ev.on_score(score("y", 1, -0.9))
    ev.set_rules(rules_with(rolling(threshold=-0.5, last_n=2, min_utterances=2)))
    assert ev.on_score(score("y", 2, -0.9)).decision == "escalate"  # history kept
    assert ev.is_escalated("c")  # state kept


def test_eviction_forgets_idle_calls() -> None:
    ev, clock = make()
    ev.on_score(score("old", 1))
    clock.advance(100)
    ev.on_score(score("new", 1))
    assert ev.evict(50) == 1 and set(ev.calls) == {"new"}
