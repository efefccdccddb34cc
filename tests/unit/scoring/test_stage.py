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


def said(
    index: int,
    text: str,
    *,
    start_ms: int | None = None,
    stream_sid: str = "ST1",
    offset: int = 0,
) -> SourceRecord:
    """A final transcript as the ASR stage writes it: id and index from its audio position."""
    start = index * 1000 if start_ms is None else start_ms
    record = Transcript(
        call_sid="CA1",
        stream_sid=stream_sid,
        utterance_id=f"CA1-{start}",
        utterance_index=start,
        is_final=True,
        text=text,
        start_ms=start,
        end_ms=start + 700,
        engine="fake",
        speech_end_at_ms=900,
        produced_at_ms=1000,
        latency_ms=100.0,
    )
    return SourceRecord(T, 0, offset, b"CA1", record.to_bytes())


class Table:
    """The faust Table as the stage sees it: entries saved as bytes (the changelog's form)."""

    def __init__(self) -> None:
        self.saved: dict[bytes, bytes] = {}

    def load(self, key: bytes, partition: int) -> ScoringTableEntry:
        raw = self.saved.get(key)
        return ScoringTableEntry.from_bytes(raw) if raw else ScoringTableEntry(partition=partition)

    def save(self, entries: dict[bytes, tuple[ScoringTableEntry, int]]) -> None:
        for key, (entry, _) in entries.items():
            self.saved[key] = entry.to_bytes()


REPEAT_RULES = RulesFile.model_validate(
    {
        "agent_groups": {"g": {"numbers": ["+910000000000"]}},
        "default": {
            "categories": {"legal": {"phrases": ["lawyer"]}},
            "rules": [
                {"id": "loop", "kind": "repetition", "count": 2, "similarity": 0.6, "target": "g"}
            ],
        },
    }
)


async def test_replays_add_no_scores_and_no_counts() -> None:
    scoring = ScoringStage(
        ScoringSettings(engine="vader", batch_max_wait_ms=0.0),
        REPEAT_RULES,
        FakeScorer(),
        clock=lambda: 2.0,
    )
    table = Table()
    lines = ["change my plan", "I want to change my plan", "my lawyer says change my plane"]
    batch = [said(n, text, offset=n) for n, text in enumerate(lines)]
    out = await scoring.handle(batch, T, table.load)
    table.save(out.entries)
    [last] = out.scores[-1:]
    assert last.state.repeat_counts == {"loop": 2} and last.state.keyword_hits == {"legal": 1}
    assert [s.utterance_id for s in out.scores] == ["CA1-0", "CA1-1000", "CA1-2000"]
    # the same transcript twice, a replay of the whole partition after a restart (the entry
    # read back from the changelog), and one utterance re-cut 16 ms later by a restarted VAD
    for replay in ([batch[-1]], batch, [said(2, lines[2], start_ms=2016)]):
        again = await scoring.handle(replay, T, table.load)
        table.save(again.entries)
        assert again.scores == []
    state = ScoringTableEntry.from_bytes(table.saved[b"CA1"]).state
    assert state.utterance_count == 3 and state.keyword_hits == {"legal": 1}
    assert state.repeat_counts == {"loop": 2}
    # new audio still counts; so does a second stream of the same call (positions restart)
    more = await scoring.handle([said(3, "change my plan")], T, table.load)
    assert more.scores[0].state.repeat_counts == {"loop": 3}
    table.save(more.entries)
    other = await scoring.handle([said(0, "hello", stream_sid="ST2")], T, table.load)
    assert other.scores[0].state.utterance_count == 5


async def test_dedupe_is_by_audio_position_not_arrival_order() -> None:
    scoring, _ = stage()
    table = Table()
    out = await scoring.handle([said(5, "later"), said(2, "earlier arriving late")], T, table.load)
    assert [s.text for s in out.scores] == ["later"]  # audio already past: a replay
