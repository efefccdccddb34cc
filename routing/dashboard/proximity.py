"""How close a call is to each escalation rule firing, as a number in [0, 1] (1 = fires).

Pure. The dashboard ranks calls by the largest of these; it is a view for people, the
evaluator alone decides. Sentiment rules measure from neutral: a neutral call is 0, a call at
the threshold is 1. Rules that fire on an event (``dtmf``) are 0 until they fire.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.rules import (
    KeywordRule,
    MaxDurationRule,
    RepetitionRule,
    Rule,
    SentimentRollingRule,
    SentimentSingleRule,
    SilenceRule,
)


@dataclass(frozen=True)
class CallFacts:
    """What the closeness of a call to its rules is computed from."""

    sentiments: Sequence[float]
    keyword_hits: dict[str, int]
    repeat_count: int
    live: bool
    started_at_ms: int
    last_speech_at_ms: int | None
    now_ms: int


def _clamp(value: float) -> float:
    return 0.0 if value < 0 else 1.0 if value > 1 else value


def _below(value: float, threshold: float) -> float:
    """0 at neutral (or above), 1 at or below a negative threshold."""
    if threshold < 0:
        return _clamp(value / threshold)
    return _clamp((1.0 - value) / (1.0 - threshold)) if threshold < 1 else 1.0


def closeness(rule: Rule, facts: CallFacts) -> float:
    """How close ``facts`` are to ``rule`` firing, in [0, 1]."""
    if isinstance(rule, SentimentRollingRule):
        values = list(facts.sentiments[-(rule.last_n or 3) :])
        if not values:
            return 0.0
        near = _below(sum(values) / len(values), rule.threshold)
        return near * min(1.0, len(values) / rule.min_utterances)
    if isinstance(rule, SentimentSingleRule):
        return _below(facts.sentiments[-1], rule.threshold) if facts.sentiments else 0.0
    if isinstance(rule, KeywordRule):
        hits = max((facts.keyword_hits.get(c, 0) for c in rule.categories), default=0)
        return _clamp(hits / rule.min_hits)
    if isinstance(rule, RepetitionRule):
        return _clamp(facts.repeat_count / rule.count)
    if isinstance(rule, SilenceRule):
        if not facts.live:
            return 0.0
        since = facts.last_speech_at_ms or facts.started_at_ms
        return _clamp((facts.now_ms - since) / (rule.seconds * 1000))
    if isinstance(rule, MaxDurationRule):
        if not facts.live:
            return 0.0
        return _clamp((facts.now_ms - facts.started_at_ms) / (rule.seconds * 1000))
    return 0.0  # dtmf: an event, not a trend


def nearest(rules: Sequence[Rule], facts: CallFacts) -> tuple[str | None, float]:
    """The rule the call is closest to firing and how close (first in priority on ties)."""
    best: tuple[str | None, float] = (None, 0.0)
    for rule in rules:
        value = closeness(rule, facts)
        if value > best[1]:
            best = (rule.id, value)
    return best
