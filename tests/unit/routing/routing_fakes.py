"""Builders shared by the routing unit tests: a hand-moved clock, rules, scores and events."""

from __future__ import annotations

from collections import Counter
from typing import Any

from schemas.records import CallEvent, CallState, KeywordHit, Score, Sentiment
from schemas.rules import RulesFile

T0 = 1_800_000_000.0


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


GROUPS = {
    "support": {"numbers": ["+918000000001", "+918000000002"], "parallel": True},
    "legal": {"numbers": ["+918000000009"]},
    "trunked": {"trunk": "trunk-2134"},
}
CATEGORIES = {
    "human_request": {"phrases": ["talk to a human", "supervisor"]},
    "legal_threat": {"phrases": ["lawyer"]},
    "complaint": {"phrases": ["complaint"]},
}


def rules_with(*rules: dict[str, Any], **extra: Any) -> RulesFile:
    data: dict[str, Any] = {
        "agent_groups": GROUPS,
        "default": {"categories": CATEGORIES, "rules": [dict(r) for r in rules]},
    }
    data.update(extra)
    return RulesFile.model_validate(data)


def score(
    call_sid: str,
    index: int,
    sentiment: float = 0.0,
    text: str = "",
    *,
    confidence: float = 0.9,
    categories: tuple[str, ...] = (),
    scored_at_ms: int | None = None,
    speech_end_at_ms: int | None = None,
    tenant: str = "default",
    campaign: str = "default",
    state: CallState | None = None,
) -> Score:
    scored = scored_at_ms if scored_at_ms is not None else int(T0 * 1000)
    label = "negative" if sentiment < -0.2 else "positive" if sentiment > 0.2 else "neutral"
    return Score(
        call_sid=call_sid,
        tenant=tenant,
        campaign=campaign,
        utterance_id=f"{call_sid}-u{index}",
        utterance_index=index,
        text=text or f"utterance {index}",
        sentiment=Sentiment(score=sentiment, label=label, confidence=confidence),
        keywords=[
            KeywordHit(category=c, phrase=c, matched=c, span=(0, len(c))) for c in categories
        ],
        # what the scoring worker would publish for a call's first utterance: its own hits
        # (tests of counts across a call pass the running state themselves)
        state=state or CallState(keyword_hits=dict(Counter(categories))),
        speech_end_at_ms=speech_end_at_ms if speech_end_at_ms is not None else scored - 500,
        scored_at_ms=scored,
        latency_ms=3.0,
    )


def call_event(kind: str, call_sid: str, at_s: float, **fields: Any) -> CallEvent:
    return CallEvent(
        kind=kind,  # type: ignore[arg-type]
        call_sid=call_sid,
        occurred_at_ms=int(at_s * 1000),
        **fields,
    )
