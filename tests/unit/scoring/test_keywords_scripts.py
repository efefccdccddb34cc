"""Phrases in any script: Devanagari and romanised Hindi phrases, matched on folded text."""

from __future__ import annotations

import unicodedata

import pytest

from analytics.scoring.callstate import content_words, similarity
from analytics.scoring.keywords import DEFAULT_CATEGORIES, KeywordSpotter, tokenize
from analytics.scoring.textnorm import fold
from schemas.rules import PhraseCategory

pytestmark = pytest.mark.unit

HINDI = KeywordSpotter(
    {
        "human_request": PhraseCategory(phrases=["मैनेजर से बात", "manager se baat"]),
        "complaint": PhraseCategory(phrases=["शिकायत"]),
        "legal_threat": PhraseCategory(phrases=["कोर्ट", "court"]),
    }
)


def found(text: str) -> list[tuple[str, str]]:
    hits = HINDI.find(text)
    for hit in hits:  # a span always points into the text as given
        assert text[hit.span[0] : hit.span[1]] == hit.matched
    return [(h.category, h.matched) for h in hits]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("मुझे मैनेजर से बात करनी है।", [("human_request", "मैनेजर से बात")]),
        ("Mujhe manager se baat karni hai", [("human_request", "manager se baat")]),
        ("MANAGER SE BAAT karao", [("human_request", "MANAGER SE BAAT")]),
        ("मेरी शिकायत दर्ज कीजिए", [("complaint", "शिकायत")]),
        ("शिकायत", [("complaint", "शिकायत")]),
        ("मैं आपको कोर्ट में ले जाऊँगा", [("legal_threat", "कोर्ट")]),
        # a mixed-script line: English and Hindi phrases in one transcript
        (
            "I will go to court, शिकायत भी करूँगा",
            [("legal_threat", "court"), ("complaint", "शिकायत")],
        ),
    ],
)
def test_hindi_phrases_match_in_their_script(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "मुझे मैनेजर चाहिए",  # only part of the phrase
        "शिकार",  # another word sharing the first letters
        "मैनेजर। से बात",  # the danda ends a clause: a phrase never spans it
        "shikayat",  # romanised text does not match a Devanagari phrase (no transliteration)
    ],
)
def test_hindi_near_misses(text: str) -> None:
    assert found(text) == []


def test_a_word_keeps_its_vowel_signs_and_virama() -> None:
    # matras (ै, े), virama (्) and nukta are combining marks: part of the word, not breaks
    assert [t.word for t in tokenize("मैनेजर से बात, क्या?")] == ["मैनेजर", "से", "बात", "क्या"]


def test_normalisation_forms_match_each_other() -> None:
    # NFC phrase vs NFD transcript (a nukta letter decomposed), full-width Latin
    text = unicodedata.normalize("NFD", "ज़रूर शिकायत") + " ＣＯＵＲＴ"
    assert [c for c, _ in found(text)] == ["complaint", "legal_threat"]
    folded, spans = fold("ＣＯＵＲＴ")
    assert folded == "court" and spans == [(i, i + 1) for i in range(5)]


@pytest.mark.parametrize(
    "text",
    [
        "I want to talk to a human",
        "Okay. Then I want to SPEAK to a Supervisor!",
        "I dont need a lawyer",
    ],
)
def test_english_is_folded_as_before(text: str) -> None:
    assert fold(text) == (text.lower(), None)  # ASCII: the old lower-casing path
    default = KeywordSpotter(DEFAULT_CATEGORIES)
    assert default.find(text) == default.find(text.replace("'", "\u2019"))


def test_repetition_counts_devanagari_utterances() -> None:
    assert content_words("मुझे मैनेजर से बात करनी है") == ("मुझे", "मैनेजर", "से", "बात", "करनी", "है")
    assert similarity("मुझे मैनेजर से बात करनी है", "मैनेजर से बात करनी है") > 0.8
    assert similarity("मुझे मैनेजर से बात करनी है", "मेरा बैलेंस बताइए") == 0.0
    assert content_words("My card is [CARD]") == ("card", "[card]")
