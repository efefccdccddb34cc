"""Keyword and phrase spotting in (ASR) transcripts, per tenant/campaign categories.

Robust to recogniser errors, but not at the cost of precision:

- words are compared after light stemming ("cancelled", "cancelling", "cancellation" ->
  "cancel") and by edit distance ("supervisr", "ambulanse"); the edits allowed shrink with the
  phrase's length (:func:`edit_limits`): a one-word phrase of up to 4 letters ("sue") matches
  that exact word only, never "sun", "sued" or "issue", and a 5-6 letter one ("court", "lawyer")
  its inflections only, because a recogniser's mistakes are other real words ("count", "layer");
- a word the recogniser split in two ("super visor") matches the phrase word it came from;
- multi-word phrases tolerate a dropped short function word ("speak to agent" for "speak to an
  agent") and one inserted word ("talk to a real human");
- a negated mention ("I do not want to cancel", "I don't need a lawyer") is not a hit when the
  category is ``negatable`` (the default); negation looks back a few words within the clause;
- phrases and text are compared folded (:mod:`analytics.scoring.textnorm`): any script, so a
  Devanagari phrase matches Devanagari text and a romanised Hindi one romanised text.

The spotter is compiled once per category set (:class:`KeywordSpotter`) and is pure and
thread-safe. Word-pair similarities are memoised, so cost grows with distinct words, not calls.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from analytics.scoring.textnorm import fold, source_span, unicode_word
from schemas.records import KeywordHit
from schemas.rules import PhraseCategory

# Shipped fallback, used when a rules file defines no categories at all.
DEFAULT_CATEGORIES: dict[str, PhraseCategory] = {
    "human_request": PhraseCategory(
        phrases=[
            "talk to a human",
            "speak to a human",
            "human being",
            "real person",
            "talk to a person",
            "speak to someone",
            "talk to someone",
            "talk to an agent",
            "speak to an agent",
            "connect me to an agent",
            "customer care executive",
            "representative",
            "supervisor",
            "manager",
            "operator",
        ]
    ),
    "legal_threat": PhraseCategory(
        phrases=[
            "lawyer",
            "advocate",
            "legal action",
            "legal notice",
            "take you to court",
            "court",
            "sue",
            "suing",
            "consumer forum",
            "consumer court",
            "police complaint",
            "file a case",
            "ombudsman",
        ]
    ),
    "cancellation": PhraseCategory(
        phrases=[
            "cancel",
            "cancellation",
            "close my account",
            "terminate",
            "unsubscribe",
            "stop my subscription",
            "discontinue",
            "port out",
        ]
    ),
    "complaint": PhraseCategory(
        phrases=[
            "complaint",
            "complain",
            "worst service",
            "terrible service",
            "fed up",
            "ridiculous",
            "useless",
            "pathetic",
            "not acceptable",
            "escalate",
        ]
    ),
    "payment_dispute": PhraseCategory(
        phrases=[
            "already paid",
            "wrong charge",
            "charged twice",
            "double charged",
            "refund",
            "dispute",
            "chargeback",
            "not my loan",
            "never took a loan",
            "overcharged",
            "deducted",
        ]
    ),
    "medical_emergency": PhraseCategory(
        negatable=False,
        phrases=[
            "chest pain",
            "cannot breathe",
            "can't breathe",
            "difficulty breathing",
            "unconscious",
            "bleeding",
            "heart attack",
            "stroke",
            "ambulance",
            "emergency",
            "seizure",
            "fainted",
        ],
    ),
}

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_CLAUSE_BREAK_RE = re.compile(r"[.,;:!?\u0964\u0965]|\bbut\b|\bhowever\b|\bthough\b")
_NEGATORS = frozenset(
    {"not", "no", "never", "dont", "don't", "didnt", "didn't", "wont", "won't", "cannot",
     "can't", "cant", "doesnt", "doesn't", "isnt", "isn't", "arent", "aren't", "wasnt",
     "wasn't", "havent", "haven't", "shouldnt", "shouldn't", "wouldnt", "wouldn't", "without",
     "neither", "nor", "nothing"}
)  # fmt: skip
_NEGATION_WINDOW = 4
_FUNCTION_WORDS = frozenset({"a", "an", "the", "to", "my", "me", "of", "for", "with", "i", "you"})
_SUFFIXES = (
    ("ational", "ate"),
    ("ations", ""),
    ("ation", ""),
    ("ments", ""),
    ("ment", ""),
    ("ingly", ""),
    ("edly", ""),
    ("ings", ""),
    ("ing", ""),
    ("ied", "y"),
    ("ies", "y"),
    ("ed", ""),
    ("es", ""),
    ("s", ""),
    ("ly", ""),
)


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light, deterministic suffix stripper (inflections, not a full Porter stemmer)."""
    w = word.lower().replace("'", "")
    if len(w) <= 4:
        return w[:-1] if len(w) == 4 and w.endswith("s") and not w.endswith("ss") else w
    for suffix, repl in _SUFFIXES:
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            if suffix == "s" and w.endswith("ss"):
                continue
            w = w[: -len(suffix)] + repl
            break
    if len(w) > 4 and w[-1] == w[-2] and w[-1] not in "aeiousl":
        w = w[:-1]  # stopp -> stop, admitt -> admit
    if len(w) > 4 and w.endswith("ll"):
        w = w[:-1]  # cancell -> cancel
    if len(w) > 4 and w.endswith("e"):
        w = w[:-1]  # terminate / terminat
    return w


def _levenshtein(a: str, b: str, limit: int) -> int:
    """Edit distance within a band of ``limit``; any value above ``limit`` reads limit + 1."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    big = limit + 1
    previous = [j if j <= limit else big for j in range(len(b) + 1)]
    for i in range(1, len(a) + 1):
        lo, hi = max(1, i - limit), min(len(b), i + limit)
        current = [big] * (len(b) + 1)
        current[0] = i if i <= limit else big
        best = current[0]
        ca = a[i - 1]
        for j in range(lo, hi + 1):
            value = previous[j - 1] + (ca != b[j - 1])
            if previous[j] + 1 < value:
                value = previous[j] + 1
            if current[j - 1] + 1 < value:
                value = current[j - 1] + 1
            current[j] = value if value <= limit else big
            if value < best:
                best = value
        if best > limit:
            return big
        previous = current
    return previous[-1]


EXACT = -1  # edit limit of a word that must appear as is (not even an inflection)
_EXACT_LETTERS = 4  # a one-word phrase this short matches the exact word only
_FULL_LETTERS = 8  # phrases of this many letters or more get the configured threshold


def edit_limits(words: tuple[str, ...], threshold: float, fuzzy: bool) -> tuple[int, ...]:
    """How far each word of a phrase may be from what was heard.

    ``EXACT``: the word itself; ``0``: the same stem (an inflection); ``n``: stems within ``n``
    edits. The fuzzy part scales with the phrase's letters, from nothing at 4 letters to the
    configured ``threshold`` at 8 and more (and at most one edit per 6 letters of a word):
    short phrases are where a one-letter change turns one real word into another ("sue"/"sun",
    "court"/"count").
    """
    letters = sum(len(w) for w in words)
    if len(words) == 1 and letters <= _EXACT_LETTERS:
        return (EXACT,)
    if not fuzzy:
        return tuple(0 for _ in words)
    ramp = min(1.0, max(0.0, (letters - _EXACT_LETTERS) / (_FULL_LETTERS - _EXACT_LETTERS)))
    allowed = (1.0 - threshold) * ramp
    # At most one edit per 6 letters: "supervised" is two edits from "supervisor".
    return tuple(min(int(len(stem(w)) * allowed + 1e-9), len(stem(w)) // 6) for w in words)


@lru_cache(maxsize=262144)
def word_matches(text_word: str, phrase_word: str, limit: int) -> bool:
    """Does a transcript word match a phrase word (both lower-cased) within ``limit``?"""
    if text_word == phrase_word:
        return True
    if limit == EXACT:
        return False
    a, b = stem(text_word), stem(phrase_word)
    if a == b:
        return True
    if limit <= 0 or min(len(a), len(b)) < 4:
        return False
    if a[0] != b[0] and a[-1] != b[-1]:
        return False  # recognisers rarely get both ends of a word wrong
    return _levenshtein(a, b, limit) <= limit


@dataclass(frozen=True)
class _Phrase:
    category: str
    phrase: str
    words: tuple[str, ...]
    negatable: bool
    fuzzy: bool  # also tolerate an inserted word and a word split in two
    limits: tuple[int, ...]  # per word, see edit_limits


@dataclass(frozen=True)
class _Token:
    word: str
    start: int
    end: int
    clause: int


@lru_cache(maxsize=1)
def _unicode_token_re() -> re.Pattern[str]:
    atom = unicode_word()
    return re.compile(f"{atom}+(?:'{atom}+)?")


def tokenize(text: str) -> list[_Token]:
    """Folded word tokens (:mod:`analytics.scoring.textnorm`: NFKC, case-folded, any script)
    with their character spans in ``text`` and a clause number (for negation)."""
    lowered, spans = fold(text)
    breaks = [m.start() for m in _CLAUSE_BREAK_RE.finditer(lowered)]
    tokens: list[_Token] = []
    clause = 0
    b = 0
    for m in (_TOKEN_RE if spans is None else _unicode_token_re()).finditer(lowered):
        while b < len(breaks) and breaks[b] < m.start():
            clause += 1
            b += 1
        if m.group() in ("but", "however", "though"):
            continue
        tokens.append(_Token(m.group(), *source_span(spans, m.start(), m.end()), clause))
    return tokens


class KeywordSpotter:
    """Spots the phrases of a set of categories in text."""

    def __init__(
        self, categories: Mapping[str, PhraseCategory], fuzzy_threshold: float = 0.8
    ) -> None:
        self.threshold = fuzzy_threshold
        self.phrases: list[_Phrase] = []
        for name, category in categories.items():
            for phrase in category.phrases:
                words = tuple(t.word for t in tokenize(phrase))
                if words:
                    limits = edit_limits(words, fuzzy_threshold, category.fuzzy)
                    fuzzy = category.fuzzy and limits[0] != EXACT
                    self.phrases.append(
                        _Phrase(name, phrase, words, category.negatable, fuzzy, limits)
                    )
        # Phrases by first word. A heard word is compared (memoised) with every distinct first
        # word at the loosest limit any phrase starting with it allows; each phrase then checks
        # its own limit.
        self._by_first: dict[str, list[_Phrase]] = {}
        loosest: dict[str, int] = {}
        for p in self.phrases:
            self._by_first.setdefault(p.words[0], []).append(p)
            loosest[p.words[0]] = max(loosest.get(p.words[0], EXACT), p.limits[0])
        self._first_words = sorted(
            (first, len(stem(first)), limit) for first, limit in loosest.items()
        )
        self._anchor_cache: dict[str, list[str]] = {}

    def _anchors(self, word: str) -> list[str]:
        """The phrases' first words that ``word`` may match (memoised per distinct word)."""
        found = self._anchor_cache.get(word)
        if found is None:
            sw = len(stem(word))
            found = [
                f
                for f, length, limit in self._first_words
                if abs(sw - length) <= max(limit, 0) and word_matches(word, f, limit)
            ]
            if len(self._anchor_cache) > 100_000:
                self._anchor_cache.clear()
            self._anchor_cache[word] = found
        return found

    def find(self, text: str) -> list[KeywordHit]:
        tokens = tokenize(text)
        if not tokens or not self.phrases:
            return []
        hits: list[tuple[int, int, _Phrase]] = []
        for i, token in enumerate(tokens):
            anchors = [(first, False) for first in self._anchors(token.word)]
            if i + 1 < len(tokens):
                joined = token.word + tokens[i + 1].word  # "super visor"
                taken = {first for first, _ in anchors} | set(self._anchors(tokens[i + 1].word))
                anchors += [(f, True) for f in self._anchors(joined) if f not in taken]
            for first, split in anchors:
                heard = token.word + tokens[i + 1].word if split else token.word
                for phrase in self._by_first[first]:
                    if split and not phrase.fuzzy:
                        continue
                    if not word_matches(heard, first, phrase.limits[0]):
                        continue
                    end = self._match_rest(tokens, i, phrase, split)
                    if end is None:
                        continue
                    if phrase.negatable and self._negated(tokens, i):
                        continue
                    hits.append((tokens[i].start, tokens[end].end, phrase))
        return self._dedupe(text, hits)

    def _match_rest(
        self, tokens: list[_Token], i: int, phrase: _Phrase, split_first: bool
    ) -> int | None:
        """Index of the last token of a match of ``phrase`` starting at ``tokens[i]``."""
        t = i + (2 if split_first else 1)
        last = t - 1
        inserted = 0
        for word, limit in zip(phrase.words[1:], phrase.limits[1:], strict=True):
            while True:
                if t < len(tokens) and word_matches(tokens[t].word, word, limit):
                    last = t
                    t += 1
                    break
                if (
                    t + 1 < len(tokens)
                    and phrase.fuzzy
                    and word_matches(tokens[t].word + tokens[t + 1].word, word, limit)
                ):
                    last = t + 1
                    t += 2
                    break
                if word in _FUNCTION_WORDS:
                    break  # the recogniser dropped a short function word: skip it
                if inserted == 0 and t < len(tokens) and phrase.fuzzy:
                    inserted += 1
                    t += 1
                    continue
                return None
        if tokens[last].clause != tokens[i].clause:
            return None  # a phrase never spans a clause break
        return last

    @staticmethod
    def _negated(tokens: list[_Token], i: int) -> bool:
        clause = tokens[i].clause
        for k in range(max(0, i - _NEGATION_WINDOW), i):
            if tokens[k].clause == clause and (
                tokens[k].word in _NEGATORS or tokens[k].word.endswith("n't")
            ):
                return True
        return False

    @staticmethod
    def _dedupe(text: str, hits: list[tuple[int, int, _Phrase]]) -> list[KeywordHit]:
        """Per category keep the longest of overlapping matches; order by position."""
        hits.sort(key=lambda h: (h[2].category, h[0], -(h[1] - h[0])))
        kept: list[tuple[int, int, _Phrase]] = []
        for start, end, phrase in hits:
            if kept and kept[-1][2].category == phrase.category and start < kept[-1][1]:
                continue
            kept.append((start, end, phrase))
        kept.sort(key=lambda h: (h[0], h[2].category))
        return [
            KeywordHit(category=p.category, phrase=p.phrase, matched=text[s:e], span=(s, e))
            for s, e, p in kept
        ]


def categories_or_default(categories: Mapping[str, PhraseCategory]) -> Mapping[str, PhraseCategory]:
    """The resolved categories, or the shipped defaults when a rules file defines none."""
    return categories if categories else DEFAULT_CATEGORIES
