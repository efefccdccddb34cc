"""Per-call running state: a pure fold of scored utterances and call events into CallState.

No I/O and no clock: every input carries its own times, so replaying the same records gives the
same state (the faust Table's changelog replay relies on that).

Times: ``last_speech_end_ms`` and ``talk_time_ms`` are audio positions from the stream start
(the transcript's ``end_ms``); ``silence_since_speech_ms`` is the caller's silence before the
latest utterance (its start minus the previous utterance's end).

Keyword and repeat counts are owned here (routing only reads them from ``Score.state``): the
fold runs once per utterance in the worker that holds the call's partition, its state survives
restarts in the Table's changelog, and replayed utterances are not folded twice. The repeat
similarity is the rules file's (``RepetitionRule.similarity``, per rule); this module has none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from analytics.scoring.keywords import EXACT, edit_limits, stem, word_matches
from analytics.scoring.settings import ScoringSettings
from analytics.scoring.textnorm import fold, unicode_word
from schemas.records import CallEvent, CallState, KeywordHit
from schemas.rules import RepetitionRule

# The rules file's default similarity, for the analysts' ``repeat_count`` of a call whose rules
# have no repetition rule: a default of the rules file, not a setting of its own.
DEFAULT_REPEAT_SIMILARITY: float = RepetitionRule.model_fields["similarity"].default

_WORD_RE = re.compile(r"\[[a-z]+\]|[a-z0-9]+")
# Words that carry no request of their own: fillers, politeness, pronouns, auxiliaries and bare
# acknowledgements. "yes" three times is a caller answering three questions, not a bot failing.
_NOT_CONTENT = frozenset(
    {"a", "an", "the", "to", "of", "for", "in", "on", "at", "and", "or", "so", "but", "with",
     "i", "me", "my", "you", "your", "we", "us", "our", "it", "its", "this", "that", "is", "am",
     "are", "was", "be", "do", "did", "does", "can", "could", "would", "will", "shall", "should",
     "want", "wanna", "need", "like", "just", "please", "pls", "kindly", "um", "uh", "uhh", "umm",
     "er", "ah", "oh", "hmm", "mm", "ok", "okay", "yes", "yeah", "yep", "no", "nope", "hello",
     "hi", "hey", "sir", "madam", "maam", "thanks", "thank", "im", "ive", "id", "youre",
     "again", "said", "say", "told", "tell", "already", "now", "right", "well", "actually"}
)  # fmt: skip


@dataclass(frozen=True)
class FoldParams:
    """The knobs of the fold (from ScoringSettings)."""

    window_n: int = 5
    ewma_alpha: float = 0.4
    recent_texts: int = 3

    @classmethod
    def from_settings(cls, settings: ScoringSettings) -> FoldParams:
        """The one place the scoring settings become the fold's knobs."""
        return cls(
            window_n=settings.window_n,
            ewma_alpha=settings.ewma_alpha,
            recent_texts=settings.recent_texts,
        )


@lru_cache(maxsize=4096)
def content_words(text: str) -> tuple[str, ...]:
    """What an utterance asks for: its words folded (any script, :mod:`.textnorm`), apostrophes
    dropped ("order's" -> "orders"), fillers and function words left out; redaction tags
    ("[CARD]") kept as words."""
    folded, spans = fold(text)
    pattern = _WORD_RE if spans is None else _unicode_word_re()
    words = pattern.findall(folded.replace("'", ""))
    return tuple(w for w in words if w not in _NOT_CONTENT)


@lru_cache(maxsize=1)
def _unicode_word_re() -> re.Pattern[str]:
    return re.compile(rf"\[[a-z]+\]|{unicode_word()}+")


# How far one word may be misheard (a word-level tolerance, the keyword spotter's default; not
# the repeat similarity, which is the rules file's): one edit in words of 7+ letters, none under.
_WORD_FUZZ = 0.8
_SOFT_C = re.compile(r"c(?=[eiy])")
_NOT_KEY = re.compile(r"[aeiouyhw]")


@lru_cache(maxsize=16384)
def phonetic_key(word: str) -> str:
    """A rough sound-alike key: first letter, then consonants with c/k/q, s/z, f/ph merged and
    doubles collapsed ("balance"/"balanse" -> "blns", "check"/"kick" -> "k")."""
    w = _SOFT_C.sub("s", word.lower()).replace("ph", "f").replace("x", "ks")
    w = w.replace("c", "k").replace("q", "k").replace("z", "s")
    if not w:
        return w
    key = w[0]
    for ch in _NOT_KEY.sub("", w[1:]):
        if ch != key[-1]:
            key += ch
    return key


def _same_word(a: str, b: str) -> bool:
    """Two content words heard as the same: the same stem ("plans"/"plan"), sound-alike (3+
    letters), or one mishearing apart by the keyword spotter's rule for a one-word phrase."""
    if a == b or stem(a) == stem(b):
        return True
    if min(len(a), len(b)) >= 3 and phonetic_key(a) == phonetic_key(b):
        return True
    limit = edit_limits((b,), _WORD_FUZZ, True)[0]
    return limit != EXACT and word_matches(a, b, limit)


def similarity(a: str, b: str) -> float:
    """How much two utterances say the same thing, in [0, 1]: the Dice overlap of their content
    words (2 x words in common / words in both), words matched one to one with ASR tolerance.

    "I want to change my plan" / "change my plan please" / "change my plane" are all 1.0;
    "I want to check my balance" / "I want to pay my bill" is 0.0. An utterance with no content
    word ("yes", "okay thanks") is similar to nothing.
    """
    wa, wb = content_words(a), content_words(b)
    if not wa or not wb:
        return 0.0
    unused = list(wb)
    common = 0
    for word in wa:
        for k, other in enumerate(unused):
            if _same_word(word, other):
                common += 1
                del unused[k]
                break
    return 2.0 * common / (len(wa) + len(wb))


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
    repetition: Mapping[str, float] | None = None,
) -> CallState:
    """The state after one more final utterance (``text`` already redacted).

    ``repetition``: the call's repetition rules, rule id -> ``similarity`` (the rules file's,
    in priority order). Each gets its own count of consecutive repeats in ``repeat_counts``;
    ``repeat_count`` is the first rule's (or, with none, the count at the rules file's default
    similarity), for analysts.
    """
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
    rules = dict(repetition) if repetition else {}
    counts = {
        rule_id: next_repeat_run(
            state.recent_texts, state.repeat_counts.get(rule_id, 0), text, threshold
        )
        for rule_id, threshold in rules.items()
    }
    if counts:
        repeats = next(iter(counts.values()))
    else:
        repeats = next_repeat_run(
            state.recent_texts, state.repeat_count, text, DEFAULT_REPEAT_SIMILARITY
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
            "repeat_counts": counts,
            "recent_texts": recent,
        }
    )


def next_repeat_run(recent: Sequence[str], run: int, text: str, threshold: float) -> int:
    """The repeat run after ``text``: one longer when it says again what any utterance of the
    current run said (the run is the last ``run + 1`` texts, as far as ``recent`` reaches), else
    0. Any, not only the last: a caller saying one thing four times is heard a little differently
    each time ("check my order status" as "kick my order status", then "kick my order's
    tandest"), and one poorly heard repeat must not break the run. A different request ends it.
    """
    run_texts = recent[-(run + 1) :] if recent else ()
    alike = max((similarity(said, text) for said in run_texts), default=0.0)
    return run + 1 if alike >= threshold else 0


def fold_event(state: CallState, event: CallEvent) -> CallState:
    """The state after a call event: ``start`` stamps the start time, ``dtmf`` the last digit."""
    if event.kind == "start" and state.started_at_ms is None:
        return state.model_copy(update={"started_at_ms": event.occurred_at_ms})
    if event.kind == "dtmf" and event.dtmf_digit:
        return state.model_copy(update={"last_dtmf": event.dtmf_digit})
    return state
