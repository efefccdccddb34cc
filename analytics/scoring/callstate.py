"""Per-call running state: a pure fold of scored utterances and call events into CallState.

No I/O and no clock: every input carries its own times, so replaying the same records gives the
same state (the faust Table's changelog replay relies on that).

Times: ``last_speech_end_ms`` and ``talk_time_ms`` are audio positions from the stream start
(the transcript's ``end_ms``); ``silence_since_speech_ms`` is the caller's silence before the
latest utterance (its start minus the previous utterance's end). Routing's live silence rule
measures from ``Score.speech_end_at_ms`` (wall clock) instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from analytics.scoring.settings import ScoringSettings
from schemas.records import CallEvent, CallState, KeywordHit

_NORM_RE = re.compile(r"[^a-z0-9\[\] ]+")


@dataclass(frozen=True)
class FoldParams:
    """The knobs of the fold (from ScoringSettings)."""

    window_n: int = 5
    ewma_alpha: float = 0.4
    repeat_similarity: float = 0.8
    recent_texts: int = 3

    @classmethod
    def from_settings(cls, settings: ScoringSettings) -> FoldParams:
        """The one place the scoring settings become the fold's knobs."""
        return cls(
            window_n=settings.window_n,
            ewma_alpha=settings.ewma_alpha,
            repeat_similarity=settings.repeat_similarity,
            recent_texts=settings.recent_texts,
        )


def normalise(text: str) -> str:
    return " ".join(_NORM_RE.sub(" ", text.lower()).split())


def similarity(a: str, b: str) -> float:
    """Normalised similarity of two utterances in [0, 1] (word and character level)."""
    na, nb = normalise(a), normalise(b)
    if not na or not nb:
        return 0.0
    if na == nb:
        return 1.0
    words = SequenceMatcher(None, na.split(), nb.split(), autojunk=False).ratio()
    chars = SequenceMatcher(None, na, nb, autojunk=False).ratio()
    return max(words, chars)


def slope(values: Sequence[float]) -> float:
    """Least-squares slope per utterance of ``values`` (0 for fewer than two)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x = (n - 1) / 2.0
    mean_y = sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den


def fold_utterance(
    state: CallState,
    *,
    score: float,
    keywords: Sequence[KeywordHit],
    text: str,
    start_ms: int,
    end_ms: int,
    params: FoldParams,
) -> CallState:
    """The state after one more final utterance (``text`` already redacted)."""
    first = state.utterance_count == 0
    last_n = [*state.sentiment_last_n, score][-params.window_n :]
    ewma = (
        score
        if first
        else params.ewma_alpha * score + (1 - params.ewma_alpha) * state.sentiment_ewma
    )
    hits = dict(state.keyword_hits)
    for hit in keywords:
        hits[hit.category] = hits.get(hit.category, 0) + 1
    previous = state.recent_texts[-1] if state.recent_texts else None
    repeats = (
        state.repeat_count + 1
        if previous is not None and similarity(previous, text) >= params.repeat_similarity
        else 0
    )
    recent = [*state.recent_texts, text][-max(1, params.recent_texts) :]
    silence = 0 if first else max(0, start_ms - state.last_speech_end_ms)
    return state.model_copy(
        update={
            "utterance_count": state.utterance_count + 1,
            "sentiment_last_n": [round(v, 4) for v in last_n],
            "sentiment_mean_last_n": round(sum(last_n) / len(last_n), 4),
            "sentiment_ewma": round(ewma, 4),
            "sentiment_trend": round(slope(last_n), 4),
            "sentiment_min": round(score if first else min(state.sentiment_min, score), 4),
            "keyword_hits": hits,
            "talk_time_ms": state.talk_time_ms + max(0, end_ms - start_ms),
            "last_speech_end_ms": max(state.last_speech_end_ms, end_ms),
            "silence_since_speech_ms": silence,
            "repeat_count": repeats,
            "recent_texts": recent,
        }
    )


def fold_event(state: CallState, event: CallEvent) -> CallState:
    """The state after a call event: ``start`` stamps the start time, ``dtmf`` the last digit."""
    if event.kind == "start" and state.started_at_ms is None:
        return state.model_copy(update={"started_at_ms": event.occurred_at_ms})
    if event.kind == "dtmf" and event.dtmf_digit:
        return state.model_copy(update={"last_dtmf": event.dtmf_digit})
    return state
