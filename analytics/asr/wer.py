"""Word error rate with text normalisation (case, punctuation, numbers) for ASR evaluation.

References come in several conventions (upper case without punctuation, punctuated prose,
digits such as "25 to 30"); both sides are normalised the same way before scoring: lower case,
numbers spelt out as words (years read in pairs), punctuation removed, hyphens split, common
British/American spellings unified.
"""

from __future__ import annotations

import re

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_SUFFIX = re.compile(r"^(\d+)(st|nd|rd|th)$")
_ORDINALS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_SPELLING = {
    "counselled": "counseled",
    "colour": "color",
    "honour": "honor",
    "favour": "favor",
    "labour": "labor",
    "neighbour": "neighbor",
    "centre": "center",
    "theatre": "theater",
    "travelled": "traveled",
    "grey": "gray",
    "mr": "mister",
    "mrs": "missus",
    "dr": "doctor",
    "st": "saint",
    "ok": "okay",
}


def number_words(n: int) -> str:
    """Cardinal English words for 0 <= n < 10**12, without 'and'."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    for size, name in (
        (10**9, "billion"),
        (10**6, "million"),
        (1000, "thousand"),
        (100, "hundred"),
    ):
        if n >= size:
            head, rest = divmod(n, size)
            return number_words(head) + " " + name + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError(n)


def _year_words(n: int) -> str:
    head, tail = divmod(n, 100)
    if tail == 0:
        return number_words(head) + " hundred"
    if tail < 10:
        return number_words(head) + " oh " + number_words(tail)
    return number_words(head) + " " + number_words(tail)


def _ordinal(words: str) -> str:
    parts = words.split()
    last = parts[-1]
    if last in _ORDINALS:
        parts[-1] = _ORDINALS[last]
    elif last.endswith("y"):
        parts[-1] = last[:-1] + "ieth"
    else:
        parts[-1] = last + "th"
    return " ".join(parts)


def _spell_number(token: str) -> str:
    match = _ORDINAL_SUFFIX.match(token)
    if match:
        return _ordinal(number_words(int(match.group(1))))
    if "." in token:
        whole, frac = token.split(".", 1)
        return " ".join(
            [number_words(int(whole)) if whole else "", "point", *(_ONES[int(d)] for d in frac)]
        ).strip()
    value = int(token)
    if len(token) == 4 and (1100 <= value <= 1999 or 2010 <= value <= 2099):
        return _year_words(value)
    return number_words(value)


def normalize_text(text: str) -> str:
    """Lower-case words, numbers spelt out, no punctuation; for WER on both sides."""
    text = text.lower().replace("%", " percent ").replace("&", " and ")
    text = re.sub(r"\$(\d[\d,]*(?:\.\d+)?)", r"\1 dollars", text)
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)
    text = re.sub(r"[-\u2010-\u2015/]", " ", text)
    text = re.sub(r"[^\w\s'.]", " ", text)
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)
    out: list[str] = []
    for token in text.split():
        token = token.strip("'")
        if token.endswith("'s") and token[:-2].isdigit():
            token = token[:-2]
        if not token:
            continue
        if re.fullmatch(r"\d+(?:\.\d+)?|\d+(?:st|nd|rd|th)", token):
            out.extend(_spell_number(token).split())
            continue
        token = token.replace("'", "")
        out.append(_SPELLING.get(token, token))
    return " ".join(out)


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance between two word lists."""
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(errors, reference words) after normalising both sides."""
    ref = normalize_text(reference).split()
    hyp = normalize_text(hypothesis).split()
    return edit_distance(ref, hyp), len(ref)


def wer(pairs: list[tuple[str, str]]) -> float:
    """Corpus WER over (reference, hypothesis) pairs: total errors / total reference words."""
    errors = words = 0
    for ref, hyp in pairs:
        e, n = word_errors(ref, hyp)
        errors += e
        words += n
    return errors / words if words else 0.0
