"""PII redaction of transcript text: typed placeholders before anything leaves the worker.

Kinds: ``CARD`` (13-19 digits, Luhn-checked), ``AADHAAR`` (12 digits, Verhoeff-checked, first digit
2-9), ``PAN`` (ABCDE1234F), ``EMAIL``, ``PHONE`` (Indian mobile/landline and international forms)
and ``OTP`` (4-8 digit codes, written or spoken: "four two seven one", "double five").

ASR output writes numbers either as digits ("4111 1111 1111 1111") or as words ("four one one
one ..."); spoken digit words are first normalised to digits (keeping a map back to the original
character offsets) so every detector works on one form. Near misses stay: a 16-digit number failing
Luhn, a year ("2024"), amounts ("5000 rupees").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIGIT_WORDS = {
    "zero": "0",
    "oh": "0",
    "o": "0",
    "nil": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "for": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "niner": "9",
}
_MULTIPLIERS = {"double": 2, "triple": 3}

_EMAIL_RE = re.compile(
    r"\b[A-Za-z0-9._%+\-]+(?:\s+dot\s+[A-Za-z0-9_%+\-]+)*\s*(?:@|\s+at\s+)\s*[A-Za-z0-9\-]+(?:\s*(?:\.|\s+dot\s+)\s*[A-Za-z0-9\-]+)*"
    r"\s*(?:\.|\s+dot\s+)\s*(?:com|in|org|net|co|io|edu|gov|info|biz|me|uk|us)\b",
    re.IGNORECASE,
)
_PAN_RE = re.compile(r"\b[A-Za-z]{3}[PCHFATBLJGpchfatbljg][A-Za-z]\s?\d{4}\s?[A-Za-z]\b")
# A run of digits possibly separated by single spaces, hyphens or dots (grouped numbers), with
# an optional leading + (international). Runs are split into detectors' candidates below.
_DIGIT_RUN_RE = re.compile(r"(?<![\w])(\+\s?)?\d(?:[\s\-.()]{0,2}\d)*(?![\w])")
_OTP_CONTEXT_RE = re.compile(
    r"\b(otp|o\s?t\s?p|pin|code|passcode|password|cvv|verification|one time|one-time|mpin|upi)\b",
    re.IGNORECASE,
)
_PHONE_CONTEXT_RE = re.compile(
    r"\b(phone|mobile|number|call me|whatsapp|contact|landline|reach me)\b", re.IGNORECASE
)
_YEAR_RE = re.compile(r"^(19|20)\d\d$")
_AMOUNT_AFTER_RE = re.compile(
    r"^\s*(rupees?|rs\.?|inr|dollars?|usd|lakhs?|lacs?|crores?|thousand|hundred|percent|%|"
    r"rs|bucks|days?|months?|years?|hours?|minutes?|kg|km|emi)\b",
    re.IGNORECASE,
)
_AMOUNT_BEFORE_RE = re.compile(r"(rs\.?|inr|₹|\$|usd|rupees)\s*$", re.IGNORECASE)

# Verhoeff tables (Aadhaar's check digit).
_VD = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VP = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 8, 7, 6, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 5, 8, 3, 2),
)


def luhn_valid(digits: str) -> bool:
    """True when ``digits`` passes the Luhn checksum (payment cards)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def verhoeff_valid(digits: str) -> bool:
    """True when ``digits`` passes the Verhoeff checksum (Aadhaar numbers)."""
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _VD[c][_VP[i % 8][ord(ch) - 48]]
    return c == 0


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    kind: str


_WORD_RE = re.compile(r"[A-Za-z]+|\S")


def _normalise_spoken_digits(text: str) -> tuple[str, list[tuple[int, int]]]:
    """Replace runs of spoken digit words with digits.

    Returns the new text and, for every character of it, the [start, end) span in ``text`` it
    came from, so detections map back to the original offsets. Only runs of three or more digits
    are rewritten ("one of the two" stays as it is).
    """
    tokens = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    i = 0
    while i < len(tokens):
        run_digits: list[str] = []
        j = i
        pending_mult = 1
        while j < len(tokens):
            word = tokens[j][2].lower().strip(",.;:!?")
            if word in _MULTIPLIERS and j + 1 < len(tokens):
                nxt = tokens[j + 1][2].lower().strip(",.;:!?")
                if nxt in _DIGIT_WORDS:
                    pending_mult = _MULTIPLIERS[word]
                    j += 1
                    continue
                break
            if word in _DIGIT_WORDS or word.isdigit():
                digit = _DIGIT_WORDS.get(word, word)
                # "o"/"oh"/"for" count only inside a run that already holds a real digit word.
                if word in ("o", "oh", "for") and not run_digits:
                    break
                run_digits.append(digit * pending_mult)
                pending_mult = 1
                j += 1
                # Stop a run at a token with trailing sentence punctuation.
                if tokens[j - 1][2][-1:] in ".!?;":
                    break
                continue
            break
        digit_count = sum(len(d) for d in run_digits)
        spoken = any(not tokens[k][2].strip(",.;:!?").isdigit() for k in range(i, j))
        if j > i and digit_count >= 3 and spoken:
            start, end = tokens[i][0], tokens[j - 1][1]
            # strip trailing punctuation from the replaced span
            while end > start and text[end - 1] in ",.;:!?":
                end -= 1
            for ch_i in range(pos, start):
                out.append(text[ch_i])
                spans.append((ch_i, ch_i + 1))
            joined = "".join(run_digits)
            for ch in joined:
                out.append(ch)
                spans.append((start, end))
            pos = end
            i = j
        else:
            i += 1
    for ch_i in range(pos, len(text)):
        out.append(text[ch_i])
        spans.append((ch_i, ch_i + 1))
    return "".join(out), spans


class Redactor:
    """Replaces PII in text with typed placeholders and reports the kinds found.

    Stateless and thread-safe; ``enabled=False`` returns the text unchanged (a tenant opt-out).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def redact(self, text: str) -> tuple[str, list[str]]:
        """Return ``(redacted_text, sorted distinct kinds found)``."""
        redacted, kinds, _ = self.redact_spans(text)
        return redacted, kinds

    def redact_spans(self, text: str) -> tuple[str, list[str], list[tuple[int, int, str]]]:
        """:meth:`redact` and the ``(start, end, kind)`` of each part of ``text`` it replaced
        (a run of spoken digits is one span), so word timings can be masked to match."""
        if not self.enabled or not text:
            return text, [], []
        norm, back = _normalise_spoken_digits(text)
        found = self._detect(norm)
        if not found:
            return text, [], []
        # Map spans back to the original text and merge overlaps (first-found kind wins).
        mapped = sorted(
            (_Span(back[s.start][0], back[s.end - 1][1], s.kind) for s in found),
            key=lambda s: (s.start, -(s.end - s.start)),
        )
        merged: list[_Span] = []
        for span in mapped:
            if merged and span.start < merged[-1].end:
                last = merged[-1]
                merged[-1] = _Span(last.start, max(last.end, span.end), last.kind)
            else:
                merged.append(span)
        parts: list[str] = []
        pos = 0
        for span in merged:
            parts.append(text[pos : span.start])
            parts.append(f"[{span.kind}]")
            pos = span.end
        parts.append(text[pos:])
        spans = [(s.start, s.end, s.kind) for s in merged]
        return "".join(parts), sorted({s.kind for s in merged}), spans

    def _detect(self, text: str) -> list[_Span]:
        spans: list[_Span] = []
        taken: list[tuple[int, int]] = []

        def free(start: int, end: int) -> bool:
            return all(end <= a or start >= b for a, b in taken)

        def add(start: int, end: int, kind: str) -> None:
            spans.append(_Span(start, end, kind))
            taken.append((start, end))

        for m in _EMAIL_RE.finditer(text):
            add(m.start(), m.end(), "EMAIL")
        for m in _PAN_RE.finditer(text):
            if free(m.start(), m.end()):
                add(m.start(), m.end(), "PAN")
        for m in _DIGIT_RUN_RE.finditer(text):
            if not free(m.start(), m.end()):
                continue
            kind = self._classify_digits(text, m.start(), m.end(), m.group(1) is not None)
            if kind is not None:
                add(m.start(), m.end(), kind)
        return spans

    @staticmethod
    def _classify_digits(text: str, start: int, end: int, plus: bool) -> str | None:
        raw = text[start:end]
        digits = re.sub(r"\D", "", raw)
        n = len(digits)
        before = text[max(0, start - 40) : start]
        after = text[end : end + 20]
        if _AMOUNT_AFTER_RE.match(after) or _AMOUNT_BEFORE_RE.search(before):
            return None
        if "." in raw and n <= 8:
            return None  # a decimal amount, not a code
        if plus and 8 <= n <= 15:
            return "PHONE"
        if 10 <= n <= 17 and digits.startswith("00") and digits[2] != "0":
            return "PHONE"  # international access prefix (00 + country code + number)
        if 13 <= n <= 19 and luhn_valid(digits):
            return "CARD"
        if n == 12 and digits[0] not in "01" and verhoeff_valid(digits):
            return "AADHAAR"
        if n == 12 and digits.startswith("91") and digits[2] in "6789":
            return "PHONE"  # 91 + 10-digit mobile
        if n == 10 and digits[0] in "6789":
            return "PHONE"  # Indian mobile
        if n == 11 and digits[0] == "0":
            return "PHONE"  # 0 + STD code landline / mobile with trunk prefix
        if 4 <= n <= 8:
            if n == 4 and _YEAR_RE.match(digits) and not _OTP_CONTEXT_RE.search(before):
                return None
            if _OTP_CONTEXT_RE.search(before):
                return "OTP"
            if _PHONE_CONTEXT_RE.search(before) and n >= 8:
                return "PHONE"
            # A bare 4-8 digit sequence read out digit by digit is most likely a code;
            # written as one number ("5000") it is more likely an amount or count.
            if " " in raw.strip() or "-" in raw:
                return "OTP"
            if n >= 6:
                return "OTP"
            return None
        if 9 <= n <= 15 and _PHONE_CONTEXT_RE.search(before):
            return "PHONE"
        return None
