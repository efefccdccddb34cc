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


TOPIC_RECORDS = Path(__file__).parent / "topic_records.jsonl"


def topic_records() -> list[dict[str, object]]:
    """Every record the nine demo calls left on the topics, captured from a real pipeline run by
    ``scripts/capture_topic_records.py``: topic, partition, offset, key, timestamp_ms, headers,
    and ``value`` (JSON text) or ``value_base64`` (audio, three frames a call)."""
    import orjson  # the one data set that needs it; keeps this module import-light

    return [orjson.loads(line) for line in TOPIC_RECORDS.read_bytes().splitlines() if line]
