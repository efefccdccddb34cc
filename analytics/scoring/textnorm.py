"""Text folding for the keyword spotter and the repeat counter, in any script.

Phrases and transcripts are compared after Unicode NFKC and case folding, so full-width or
compatibility forms, precomposed and decomposed accents, and upper/lower case compare equal.
A word is a run of letters, digits and combining marks: a Devanagari word keeps its vowel signs
(matras), virama and nukta (``मैनेजर`` is one word, not ``म न ज र``), and Latin, Devanagari
and romanised Hindi words are all words. Folding keeps a map back to the original offsets, so a
keyword hit's span and matched text are the transcript's own.

ASCII text (most English transcripts) takes the old path: lower-casing, ``[a-z0-9]`` words.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

# Where combining marks are (the CJK, Hangul syllable, surrogate and private-use blocks hold none).
_MARK_BLOCKS = ((0x0300, 0x3400), (0xA000, 0xAC00), (0xF900, 0x1F000), (0xE0100, 0xE01F0))


@cache
def _marks() -> str:
    """A regex class body with every combining mark (categories Mn, Mc, Me); built on first use
    (a scan of ~40,000 code points, tens of ms), only once a text is not ASCII."""
    ranges: list[tuple[int, int]] = []
    for cp in (cp for lo, hi in _MARK_BLOCKS for cp in range(lo, hi)):
        if unicodedata.category(chr(cp))[0] == "M":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


@cache
def unicode_word() -> str:
    """A regex atom for one word character of any script: a letter, a digit or a mark."""
    return f"(?:[^\\W_]|[{_marks()}])"


def fold(text: str) -> tuple[str, list[tuple[int, int]] | None]:
    """``text`` normalised (NFKC), case-folded, typographic apostrophes made ASCII, with the
    ``[start, end)`` in ``text`` of every character of the result; None when ``text`` is ASCII
    (then the result has the same offsets)."""
    text = text.replace("\u2019", "'")
    if text.isascii():
        return text.lower(), None
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    i, n = 0, len(text)
    while i < n:
        # A character with the marks that follow it, normalised together (NFKC composes and
        # reorders within such a cluster, never across one).
        j = i + 1
        while j < n and unicodedata.category(text[j])[0] == "M":
            j += 1
        piece = unicodedata.normalize("NFKC", text[i:j]).casefold()
        out.append(piece)
        spans.extend([(i, j)] * len(piece))
        i = j
    return "".join(out), spans


def source_span(spans: list[tuple[int, int]] | None, start: int, end: int) -> tuple[int, int]:
    """The ``[start, end)`` in the original text of the folded text's ``[start, end)``."""
    if spans is None or end <= start:
        return start, end
    return spans[start][0], spans[end - 1][1]
