"""Small hand-made data sets shared by the tests and the benchmarks."""

from __future__ import annotations

from pathlib import Path

CALL_CENTRE_SENTIMENT = Path(__file__).parent / "call_centre_sentiment.tsv"


def call_centre_sentiment() -> list[tuple[str, str]]:
    """(label, text) rows of the 40 hand-written caller utterances (negative/neutral/positive)."""
    rows = []
    for line in CALL_CENTRE_SENTIMENT.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            label, text = line.split("\t", 1)
            rows.append((label, text))
    return rows
