"""The pure call-state fold."""

from __future__ import annotations

import pytest

from analytics.scoring.callstate import (
    DEFAULT_REPEAT_SIMILARITY,
    FoldParams,
    content_words,
    fold_event,
    fold_utterance,
    similarity,
    slope,
)
from schemas.records import CallEvent, CallState, KeywordHit
from schemas.rules import RepetitionRule

pytestmark = pytest.mark.unit

P = FoldParams(window_n=3, ewma_alpha=0.5, recent_texts=2)


def feed(
    state: CallState,
    score: float,
    text: str,
    start: int,
    end: int,
    kw: tuple[str, ...] = (),
    repetition: dict[str, float] | None = None,
) -> CallState:
    hits = [KeywordHit(category=c, phrase=c, matched=c, span=(0, 1)) for c in kw]
    return fold_utterance(
        state,
        score=score,
        keywords=hits,
        text=text,
        start_ms=start,
        end_ms=end,
        params=P,
        repetition=repetition,
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


def test_a_poorly_heard_repeat_does_not_break_the_run() -> None:
    # the demo's "check my order status" four times, as int8 Whisper heard it on one CPU
    heard = [
        "I want to kick my order status.",
        "I want to connect my order status.",
        "I want to kick my order's tandest.",  # 0.33 like the one before, 0.67 like the first
        "I want to kick my order status.",
    ]
    s = CallState()
    runs = []
    for n, text in enumerate(heard):
        s = feed(s, 0.0, text, n * 2000, n * 2000 + 1000, repetition={"loop": 0.6})
        runs.append(s.repeat_counts["loop"])
    assert runs == [0, 1, 2, 3]
    assert s.repeat_count == 3


def test_a_broken_run_is_not_resumed_by_an_older_utterance() -> None:
    s = CallState()
    said = ["I want to check my balance", "what are your opening hours", "check my balance"]
    for n, text in enumerate(said):
        s = feed(s, 0.0, text, n * 2000, n * 2000 + 1000, repetition={"loop": 0.6})
    assert s.repeat_counts == {"loop": 0}  # the run restarted at the other request
    s = feed(s, 0.0, "I want to check my balance.", 7000, 8000, repetition={"loop": 0.6})
    assert s.repeat_counts == {"loop": 1}


def test_a_run_looks_back_no_further_than_the_recent_texts() -> None:
    heard = [
        "I want to kick my order status.",
        "I want to connect my order status.",
        "I want to kick my order's tandest.",  # like the first only
    ]
    for kept, run in ((1, 0), (2, 2)):
        params = FoldParams(window_n=3, ewma_alpha=0.5, recent_texts=kept)
        s = CallState()
        for n, text in enumerate(heard):
            s = fold_utterance(
                s,
                score=0.0,
                keywords=(),
                text=text,
                start_ms=n * 2000,
                end_ms=n * 2000 + 500,
                params=params,
                repetition={"loop": 0.6},
            )
        assert s.repeat_counts == {"loop": run}, kept


def test_similarity() -> None:
    assert similarity("Agent!", "agent") == 1.0
    assert similarity("book an appointment", "what is the weather") < 0.5
    assert similarity("", "x") == 0.0


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("change my plan", "I want to change my plan"),
        ("change my plan", "um change my plan please"),
        ("I want to change my plan.", "i want to change my plane"),  # plane/plan: one stem
        ("Change my plans!", "change the plan"),
        ("I want to kick my order's status.", "I want to connect my order status."),  # real ASR
        ("where is my refund", "where's my refund"),
    ],
)
def test_repeats_survive_asr_noise(a: str, b: str) -> None:
    assert similarity(a, b) >= DEFAULT_REPEAT_SIMILARITY


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("I want to check my balance", "I want to pay my bill"),  # same frame, other request
        ("yes", "yes"),  # answering the bot's questions is not a loop
        ("okay thank you", "okay thanks"),
        ("change my plan", "cancel my order"),
    ],
)
def test_different_requests_are_not_repeats(a: str, b: str) -> None:
    assert similarity(a, b) < DEFAULT_REPEAT_SIMILARITY


def test_content_words() -> None:
    assert content_words("Um, I want to CHANGE my plans, please!") == ("change", "plans")
    assert content_words("my order's [CARD]") == ("orders", "[card]")


def test_the_rules_similarity_governs_each_repetition_rule() -> None:
    said = ["change my plan", "I want to change my plan", "change my plane please"]
    rules = {"loose": 0.5, "strict": 1.0, "never": 1.0}
    s = CallState()
    for n, text in enumerate(said):
        s = feed(s, 0.0, text, n * 2000, n * 2000 + 1000, repetition=rules)
    assert s.repeat_counts == {"loose": 2, "strict": 2, "never": 2}  # all 1.0 similar
    s = feed(s, 0.0, "change my plan and my address", 7000, 8000, repetition=rules)
    # content words {change, plan, address} vs {change, plane}: Dice 0.8
    assert s.repeat_counts == {"loose": 3, "strict": 0, "never": 0}
    assert s.repeat_count == 3  # the first rule's count
    s = feed(s, 0.0, "what time is it", 9000, 9500, repetition=rules)
    assert s.repeat_counts == {"loose": 0, "strict": 0, "never": 0}


def test_without_repetition_rules_the_rules_file_default_counts() -> None:
    assert RepetitionRule.model_fields["similarity"].default == DEFAULT_REPEAT_SIMILARITY
    s = CallState()
    for n in range(3):
        s = feed(s, 0.0, ["change my plan", "change my plan please", "change my plane"][n], n, n)
    assert s.repeat_count == 2 and s.repeat_counts == {}


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
