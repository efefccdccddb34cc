"""The call summary fold: one call's records in, one CallSummary out, and when it is due."""

from __future__ import annotations

import pytest

from routing.router import ListPublisher
from routing.summaries import SummaryBook, SummaryDraft, SummaryTap
from schemas.records import CallSummary, Decision, Score
from tests.unit.routing.routing_fakes import T0, FakeClock, call_event, score

pytestmark = pytest.mark.unit

MS = int(T0 * 1000)


def _decision(
    call_sid: str, index: int, kind: str = "continue", rule: str | None = None
) -> Decision:
    return Decision(
        call_sid=call_sid,
        decision=kind,  # type: ignore[arg-type]
        rule_id=rule,
        reason=f"reason {index}",
        target_group="support" if kind == "escalate" else None,
        utterance_id=f"{call_sid}-u{index}",
        decided_at_ms=MS + 1000 * index + 500,
        latency_ms=1.0,
    )


def _timed(
    call_sid: str,
    index: int,
    sentiment: float,
    start_ms: int,
    end_ms: int,
    categories: tuple[str, ...] = (),
) -> Score:
    s = score(call_sid, index, sentiment, scored_at_ms=MS + 1000 * index, categories=categories)
    return s.model_copy(update={"start_ms": start_ms, "end_ms": end_ms})


def _escalating_draft() -> SummaryDraft:
    draft = SummaryDraft("CA1")
    draft.on_call_event(
        call_event("start", "CA1", T0, tenant="acme", campaign="collections", from_number="+9198")
    )
    draft.on_score(_timed("CA1", 0, 0.4, 1000, 3000))
    draft.on_score(_timed("CA1", 1, -0.2, 7000, 9000, categories=("complaint",)))
    draft.on_score(_timed("CA1", 2, -0.9, 9500, 12000, categories=("human_request", "complaint")))
    draft.on_decision(_decision("CA1", 0))
    draft.on_decision(_decision("CA1", 1))
    draft.on_decision(_decision("CA1", 2, "escalate", "wants-human"))
    draft.on_call_event(call_event("stop", "CA1", T0 + 20, stop_reason="callended"))
    draft.on_call_event(call_event("passthru", "CA1", T0 + 21, answer="302"))
    return draft


def test_summary_of_an_escalated_call() -> None:
    summary = _escalating_draft().build(summarised_at_ms=MS + 25_000)
    assert isinstance(summary, CallSummary)
    assert (summary.tenant, summary.campaign, summary.from_number) == (
        "acme",
        "collections",
        "+9198",
    )
    assert summary.duration_ms == 20_000
    assert summary.end_reason == "callended"
    assert summary.talk_time_ms == 2000 + 2000 + 2500
    assert summary.silence_time_ms == 20_000 - 6500
    # gaps: 1000 before the first, 4000 and 500 between, 8000 after the last (to 20 s)
    assert summary.longest_silence_ms == 8000
    assert summary.utterance_count == 3
    assert (summary.sentiment_start, summary.sentiment_end, summary.sentiment_min) == (
        0.4,
        -0.9,
        -0.9,
    )
    assert summary.sentiment_mean == pytest.approx((0.4 - 0.2 - 0.9) / 3, abs=1e-4)
    assert summary.keyword_hits == {"complaint": 2, "human_request": 1}
    assert summary.escalated and summary.escalation_rule_id == "wants-human"
    assert summary.escalation_target_group == "support"
    assert summary.escalated_at_ms == MS + 2500
    assert summary.decision_count == 3
    assert (summary.passthru_answer, summary.passthru_at_ms) == ("302", MS + 21_000)
    assert summary.passthru_complete is None
    assert CallSummary.from_bytes(summary.to_bytes()) == summary


def test_redelivered_records_are_not_counted_twice() -> None:
    draft = _escalating_draft()
    before = draft.build(summarised_at_ms=0)
    assert not draft.on_score(_timed("CA1", 1, -0.2, 7000, 9000, categories=("complaint",)))
    assert not draft.on_decision(_decision("CA1", 2, "escalate", "wants-human"))
    assert draft.build(summarised_at_ms=0) == before


def test_silent_call_has_no_sentiment_and_all_silence() -> None:
    draft = SummaryDraft("CA2")
    draft.on_call_event(call_event("start", "CA2", T0))
    draft.on_call_event(call_event("stop", "CA2", T0 + 9, stop_reason="stopped"))
    summary = draft.build(summarised_at_ms=0)
    assert summary.utterance_count == 0
    assert summary.sentiment_start is None and summary.sentiment_mean is None
    assert summary.silence_time_ms == summary.longest_silence_ms == 9000
    assert not summary.escalated and summary.passthru_answer is None


def test_book_publishes_after_settle_then_a_new_revision_for_a_late_answer() -> None:
    clock = FakeClock()
    book = SummaryBook(settle_ms=2000, idle_ms=60_000, keep_ms=30_000, clock=clock)
    book.on_call_event(call_event("start", "CA1", clock.t))
    book.on_score(_timed("CA1", 0, -0.5, 0, 1000))
    book.on_call_event(call_event("passthru", "CA9", clock.t, answer="200"))  # not ours
    assert len(book) == 1
    clock.advance(5)
    book.on_call_event(call_event("stop", "CA1", clock.t, stop_reason="callended"))
    assert book.due() == []
    clock.advance(1.9)
    assert book.due() == []
    clock.advance(0.2)
    (first,) = book.due()
    assert (first.revision, first.passthru_answer, first.duration_ms) == (1, None, 5000)
    assert book.due() == []
    book.on_call_event(call_event("passthru", "CA1", clock.t, answer="200", complete=True))
    (second,) = book.due()
    assert (second.revision, second.passthru_answer, second.passthru_complete) == (2, "200", True)
    clock.advance(31)
    assert book.due() == [] and len(book) == 0


def test_book_summarises_an_idle_call_that_never_stopped() -> None:
    clock = FakeClock()
    book = SummaryBook(settle_ms=2000, idle_ms=60_000, clock=clock)
    book.on_call_event(call_event("start", "CA3", clock.t))
    book.on_score(_timed("CA3", 0, 0.1, 0, 1000).model_copy(update={"scored_at_ms": MS + 4000}))
    clock.advance(63)
    assert book.due() == []
    clock.advance(2)
    (summary,) = book.due()
    assert summary.end_reason == "idle_timeout"
    assert summary.ended_at_ms == MS + 4000 and summary.duration_ms == 4000


def test_tap_passes_the_routers_own_decisions_and_answers_to_the_book() -> None:
    clock = FakeClock()
    book = SummaryBook(settle_ms=0, clock=clock)
    inner = ListPublisher()
    tap = SummaryTap(inner, book)
    book.on_call_event(call_event("start", "CA1", clock.t))
    tap.publish_decision(_decision("CA1", 0, "escalate", "wants-human"))
    tap.publish_call_event(call_event("passthru", "CA1", clock.t, answer="302", complete=False))
    assert len(inner.decisions) == 1 and len(inner.call_events) == 1
    draft = book.draft("CA1")
    assert draft is not None and draft.escalation is not None
    assert (draft.passthru_answer, draft.passthru_complete) == ("302", False)


def test_untranscribed_utterances_are_counted_once_and_not_as_utterances() -> None:
    draft = _escalating_draft()
    gap = _timed("CA1", 3, 0.0, 13000, 15000).model_copy(
        update={"marker": "gap", "text": "", "utterance_index": 13000}
    )
    assert draft.on_gap(gap)
    assert not draft.on_gap(gap)  # read again after a restart
    summary = draft.build(summarised_at_ms=MS + 30_000)
    assert summary.untranscribed_utterances == 1 and summary.utterance_count == 3
    assert _escalating_draft().build(summarised_at_ms=MS).untranscribed_utterances == 0
