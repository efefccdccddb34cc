"""Word timings on redacted transcripts: PII words keep their times, their text is masked."""

from __future__ import annotations

import pytest

from analytics.asr.base import AsrError, Hypothesis, WordTiming, mask_words
from analytics.asr.ports import Redaction
from analytics.scoring.redact import Redactor
from analytics.settings import WorkerSettings
from analytics.worker import make_language, make_redactor
from schemas.rules import parse_rules_yaml

pytestmark = pytest.mark.unit


def timed(text: str, start_ms: int = 1000, step_ms: int = 300) -> tuple[WordTiming, ...]:
    return tuple(
        WordTiming(w, start_ms + i * step_ms, start_ms + (i + 1) * step_ms, 0.9)
        for i, w in enumerate(text.split())
    )


def publish(hyp: Hypothesis, redaction: Redaction) -> list[tuple[str, int, int]]:
    transcript = hyp.to_transcript(
        call_sid="CA1",
        text=redaction.text,
        pii_kinds=redaction.kinds,
        redacted=redaction.spans,
        engine="whisper",
        speech_end_at_ms=0,
        produced_at_ms=0,
    )
    return [(w.word, w.start_ms, w.end_ms) for w in transcript.words]


def test_a_number_spoken_as_digit_words_is_masked_word_by_word() -> None:
    text = "my number is nine eight four five zero one two three four five, thanks"
    hyp = Hypothesis(text, True, 1000, 5200, 0.9, timed(text), "en")
    redaction = Redaction(*Redactor().redact_spans(text))
    assert redaction.text == "my number is [PHONE], thanks" and redaction.kinds == ["PHONE"]
    words = publish(hyp, redaction)
    # every word keeps its timing (a later step mutes exactly those spans of audio)
    assert [(s, e) for _, s, e in words] == [(w.start_ms, w.end_ms) for w in hyp.words]
    assert [w for w, _, _ in words] == ["my", "number", "is", *["[PHONE]"] * 10, "thanks"]
    assert not any(ch.isdigit() for w, _, _ in words for ch in w)


def test_a_written_number_and_an_email_are_masked() -> None:
    text = "card 4111 1111 1111 1111 and mail a.b@example.com ok"
    hyp = Hypothesis(text, True, 0, 4000, 0.9, timed(text, 0))
    words = [w for w, _, _ in publish(hyp, Redaction(*Redactor().redact_spans(text)))]
    assert words == ["card", *["[CARD]"] * 4, "and", "mail", "[EMAIL]", "ok"]


def test_nothing_redacted_keeps_every_word() -> None:
    text = "I want to pay my bill"
    hyp = Hypothesis(text, True, 0, 2000, 0.9, timed(text, 0), "en")
    redaction = Redaction(*Redactor().redact_spans(text))
    assert redaction.spans == [] and [w for w, _, _ in publish(hyp, redaction)] == text.split()
    assert (
        hyp.to_transcript(
            call_sid="CA1",
            text=text,
            pii_kinds=[],
            engine="x",
            speech_end_at_ms=0,
            produced_at_ms=0,
        ).language
        == "en"
    )


def test_a_word_not_found_in_the_text_is_masked_when_anything_was_redacted() -> None:
    words = (WordTiming("call", 0, 100), WordTiming("98450", 100, 200), WordTiming("ok", 200, 300))
    # the words do not spell the text (a backend quirk): what cannot be placed may be the PII
    masked = mask_words("call [x] ok", words, [(5, 8, "PHONE")])
    assert [w.word for w in masked] == ["call", "[REDACTED]", "ok"]
    assert [w.word for w in mask_words("call ok", words, [])] == ["call", "98450", "ok"]


def test_whisper_style_words_with_punctuation() -> None:
    text = "Hello, my OTP is 4 2 7 1."
    heard = ["Hello,", "my", "OTP", "is", "4", "2", "7", "1."]
    words = tuple(WordTiming(w, i * 100, i * 100 + 100) for i, w in enumerate(heard))
    redaction = Redaction(*Redactor().redact_spans(text))
    assert redaction.text == "Hello, my OTP is [OTP]."
    assert [w.word for w in mask_words(text, words, redaction.spans)] == [
        "Hello,",
        "my",
        "OTP",
        "is",
        "[OTP]",
        "[OTP]",
        "[OTP]",
        "[OTP]",
    ]


def test_the_workers_redactor_reports_spans_per_tenant() -> None:
    rules = parse_rules_yaml("version: 1\ntenants: {open: {redact_pii: false}}\n")
    redact = make_redactor(rules)
    text = "call me on 98450 12345"
    assert redact("acme", "x", text) == Redaction(
        "call me on [PHONE]", ["PHONE"], [(11, 22, "PHONE")]
    )
    assert redact("open", "x", text) == Redaction(text, [], [])


def test_the_workers_language_per_tenant_and_unknown_codes() -> None:
    rules = parse_rules_yaml(
        "version: 1\ntenants: {b: {language: hi, campaigns: {c: {language: auto}}}}\n"
    )
    language = make_language(rules, WorkerSettings())
    assert language("a", "x") is None  # the recogniser's whisper_language
    assert (language("b", "x"), language("b", "c")) == ("hi", "auto")
    bad = parse_rules_yaml("version: 1\ntenants: {b: {language: xx}}\n")
    with pytest.raises(AsrError, match="'xx'"):
        make_language(bad, WorkerSettings())
    make_language(bad, WorkerSettings(asr_engine="vosk"))  # Vosk models have their own language
