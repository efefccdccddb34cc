"""Keyword spotting: ASR-like misspellings, inflections, split words, negation, spans."""

from __future__ import annotations

import pytest

from analytics.scoring.keywords import (
    DEFAULT_CATEGORIES,
    EXACT,
    KeywordSpotter,
    categories_or_default,
    edit_limits,
    stem,
    tokenize,
)
from schemas.rules import PhraseCategory, RulesFile

pytestmark = pytest.mark.unit

SPOTTER = KeywordSpotter(DEFAULT_CATEGORIES)


def hits(text: str) -> list[tuple[str, str]]:
    return [(h.category, h.matched) for h in SPOTTER.find(text)]


@pytest.mark.parametrize(
    ("text", "category", "matched"),
    [
        ("I want to talk to a human", "human_request", "talk to a human"),
        ("i wanna speak to agent please", "human_request", "speak to agent"),  # dropped "an"
        ("talk to a real human now", "human_request", "talk to a real human"),  # inserted word
        ("let me talk to your supervisr", "human_request", "supervisr"),  # misspelt
        ("get me the super visor", "human_request", "super visor"),  # split by the recogniser
        ("I want to cancel my plan", "cancellation", "cancel"),
        ("cancelling my subscription now", "cancellation", "cancelling"),  # inflection
        ("please process the cancellation", "cancellation", "cancellation"),
        ("I will see you in court", "legal_threat", "court"),
        ("my lawyers will call you", "legal_threat", "lawyers"),  # inflection of a short word
        ("please send an ambulanse", "medical_emergency", "ambulanse"),  # one edit, 9 letters
        ("I will sue you", "legal_threat", "sue"),
        ("Sue! I will SUE you.", "legal_threat", "Sue"),
        ("you charged me twice", "payment_dispute", "charged me twice"),
        ("he is having chest pains", "medical_emergency", "chest pains"),
        ("no, he can't breathe", "medical_emergency", "can't breathe"),  # not negatable
        ("this is the worst service ever", "complaint", "worst service"),
    ],
)
def test_hits(text: str, category: str, matched: str) -> None:
    assert (category, matched) in hits(text)


@pytest.mark.parametrize(
    "text",
    [
        "I do not want to cancel",
        "I don't want to talk to a human, the bot is fine",
        "I dont need a lawyer",
        "never asked for a refund",
        "I would like to know my balance",
    ],
)
def test_no_hits(text: str) -> None:
    assert hits(text) == []


def test_negation_is_clause_bound() -> None:
    # the negation is in another clause: "cancel" still counts
    assert ("cancellation", "cancel") in hits("I am not happy, cancel it")
    # "but" starts a new clause
    assert ("complaint", "ridiculous") in hits("I don't mind waiting but this is ridiculous")


def test_span_points_into_text() -> None:
    text = "Okay. Then I want to SPEAK to a Supervisor!"
    found = SPOTTER.find(text)
    assert found
    for hit in found:
        assert text[hit.span[0] : hit.span[1]] == hit.matched
    assert found[0].category == "human_request"


def test_non_fuzzy_category_needs_exact_stem() -> None:
    spotter = KeywordSpotter({"x": PhraseCategory(phrases=["refund"], fuzzy=False)})
    assert spotter.find("I want a refund") != []
    assert spotter.find("I want a refunds") != []  # inflection still allowed
    assert spotter.find("I want a refnud") == []


def test_short_words_are_not_fuzzy() -> None:
    spotter = KeywordSpotter({"legal": PhraseCategory(phrases=["sue"])})
    assert spotter.find("I will sue you")
    assert spotter.find("I will see you") == []


@pytest.mark.parametrize(
    "text",
    [
        "the sun is out today",  # a mishearing of "soon"
        "I sued nobody",
        "I will pursue it myself",
        "there is an issue with the app",
        "that suits me, the suit fits",
    ],
)
def test_a_one_word_phrase_of_up_to_4_letters_matches_the_exact_word_only(text: str) -> None:
    spotter = KeywordSpotter({"legal_threat": PhraseCategory(phrases=["sue"])})
    assert spotter.find(text) == []
    assert SPOTTER.find(text) == []  # and not "suing" or any other default phrase


@pytest.mark.parametrize(
    ("phrase", "near_misses", "hits"),
    [
        ("sue", ["sun", "sued", "pursue", "issue", "suit", "suez", "sues", "s ue"], ["sue"]),
        ("fire", ["fir", "fires", "fired", "hire", "afire"], ["fire"]),  # 4 letters: exact
        ("court", ["count", "cort", "curt", "courtyard", "courtesy"], ["court", "courts"]),
        ("lawyer", ["layer", "lawer", "flyer"], ["lawyer", "lawyers"]),
        ("refund", ["refine", "rotund", "refuel"], ["refunds", "refunded"]),
        ("cancel", ["camel", "cancer", "candle"], ["cancelled", "cancelling"]),
        ("supervisor", ["supervised", "supervision", "superior"], ["supervisr", "super visor"]),
        ("fed up", ["feed up", "fed us", "fled up"], ["fed up"]),
    ],
)
def test_fuzzy_matching_tightens_as_phrases_get_shorter(
    phrase: str, near_misses: list[str], hits: list[str]
) -> None:
    spotter = KeywordSpotter({"x": PhraseCategory(phrases=[phrase])})
    for word in near_misses:
        assert spotter.find(f"well {word} then") == [], (phrase, word)
    for word in hits:
        assert spotter.find(f"well {word} then"), (phrase, word)


def test_edit_limits_by_phrase_length() -> None:
    def limits(phrase: str, threshold: float = 0.8, fuzzy: bool = True) -> tuple[int, ...]:
        return edit_limits(tuple(t.word for t in tokenize(phrase)), threshold, fuzzy)

    assert limits("sue") == (EXACT,) and limits("help", fuzzy=False) == (EXACT,)
    assert limits("court") == (0,) and limits("lawyer") == (0,)  # inflections only
    assert limits("ambulance") == (1,) and limits("representative") == (2,)
    assert limits("ambulance", threshold=1.0) == (0,)
    assert limits("refund", fuzzy=False) == (0,)
    assert limits("legal action") == (0, 1)


def test_negation_still_applies_to_exact_short_phrases() -> None:
    spotter = KeywordSpotter({"legal_threat": PhraseCategory(phrases=["sue"])})
    assert spotter.find("I will not sue you") == []
    assert spotter.find("I am not happy. I will sue you")


def test_rules_file_categories_are_used() -> None:
    rules = RulesFile.model_validate(
        {
            "default": {"categories": {"vip": {"phrases": ["platinum member"]}}},
            "tenants": {
                "acme": {
                    "campaigns": {"renew": {"categories": {"renewal": {"phrases": ["renew"]}}}}
                }
            },
        }
    )
    cats = categories_or_default(rules.resolve("acme", "renew").categories)
    spotter = KeywordSpotter(cats)
    assert [h.category for h in spotter.find("I am a platinum membr and want to renew")] == [
        "vip",
        "renewal",
    ]
    assert categories_or_default(RulesFile().resolve().categories) is DEFAULT_CATEGORIES


def test_stem() -> None:
    assert {stem(w) for w in ("cancel", "cancelled", "cancelling", "cancellation")} == {"cancel"}
    assert stem("complaints") == stem("complaint")


def test_banded_levenshtein_matches_full_distance() -> None:
    import random

    from analytics.scoring.keywords import _levenshtein

    def full(a: str, b: str) -> int:
        prev = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            cur = [i]
            for j, cb in enumerate(b, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
            prev = cur
        return prev[-1]

    rng = random.Random(0)
    for _ in range(3000):
        a = "".join(rng.choice("abc") for _ in range(rng.randint(0, 7)))
        b = "".join(rng.choice("abc") for _ in range(rng.randint(0, 7)))
        for limit in (1, 2, 3):
            d = full(a, b)
            assert _levenshtein(a, b, limit) == (d if d <= limit else limit + 1)
