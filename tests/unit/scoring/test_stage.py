"""The scoring engine without a broker: records in, scores / dead letters / entries out."""

from __future__ import annotations

from collections.abc import Sequence

from analytics.scoring.sentiment import SentimentScorer
from analytics.scoring.settings import ScoringSettings
from analytics.scoring.stage import ScoringStage, ScoringTableEntry, SourceRecord
from schemas.records import CallEvent, Sentiment, Transcript
from schemas.rules import RulesFile

T, C = "t", "c"
CARD = "my card is 4111 1111 1111 1111"


class FakeScorer(SentimentScorer):
    engine = "fake"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def score_batch(self, texts: Sequence[str]) -> list[Sentiment]:
        self.seen.extend(texts)
        return [Sentiment(score=0.0, label="neutral", confidence=1.0, engine="fake") for _ in texts]


def transcript(index: int, text: str, pii: list[str] | None = None) -> SourceRecord:
    record = Transcript(
        call_sid="CA1",
        utterance_id=f"CA1-{index}",
        utterance_index=index,
        is_final=True,
        text=text,
        pii_kinds=pii or [],
        start_ms=index * 1000,
        end_ms=index * 1000 + 500,
        engine="fake",
        speech_end_at_ms=900,
        produced_at_ms=1000,
        latency_ms=100.0,
    )
    return SourceRecord(T, 0, index, b"CA1", record.to_bytes())


def stage(redacted_upstream: bool = False) -> tuple[ScoringStage, FakeScorer]:
    scorer = FakeScorer()
    settings = ScoringSettings(engine="vader", batch_max_wait_ms=0.0)
    return ScoringStage(
        settings, RulesFile(), scorer, clock=lambda: 2.0, redacted_upstream=redacted_upstream
    ), scorer


def fresh(key: bytes, partition: int) -> ScoringTableEntry:
    return ScoringTableEntry(partition=partition)


async def test_a_batch_scores_folds_and_dead_letters_without_a_broker() -> None:
    scoring, scorer = stage()
    start = CallEvent(kind="start", call_sid="CA1", occurred_at_ms=500)
    records = [
        SourceRecord(C, 0, 0, b"CA1", start.to_bytes()),
        transcript(0, "hello there"),
        transcript(0, "hello there"),  # a replay in the same batch
        SourceRecord(T, 0, 9, b"CA1", b"{not json"),
        transcript(1, CARD),
    ]
    out = await scoring.handle(records, T, fresh)
    assert [s.utterance_index for s in out.scores] == [0, 1]
    assert out.scores[1].text == "my card is [CARD]" and out.scores[1].pii_kinds == ["CARD"]
    assert scorer.seen == ["hello there", "my card is [CARD]"]
    assert out.scores[1].scored_at_ms == 2000 and out.scores[1].latency_ms == 1000.0
    assert out.scores[1].state.started_at_ms == 500
    [letter] = out.dead_letters
    assert letter.stage == "scoring" and letter.source_topic == T and letter.source_offset == 9
    assert list(out.entries) == [b"CA1"]


async def test_text_redacted_upstream_is_not_redacted_again() -> None:
    scoring, scorer = stage(redacted_upstream=True)
    out = await scoring.handle([transcript(0, "my card is [CARD]", ["CARD"])], T, fresh)
    assert scorer.seen == ["my card is [CARD]"]
    assert out.scores[0].pii_kinds == ["CARD"]
