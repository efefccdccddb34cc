"""The scoring engine, without faust: redact -> sentiment -> keywords -> call state -> Score.

For each final transcript: redact (unless the ASR stage already did, with the same rules), score the
sentiment (micro-batched with every other transcript that arrived in the same ~10 ms, in an
executor), spot keywords with the tenant/campaign's categories, fold into the call's running state
(:class:`ScoringTableEntry`) and produce a :class:`schemas.records.Score`. Call events fold in
too: ``start`` stamps the start time, ``dtmf`` the last digit, ``stop`` marks the state for
removal after a grace period. Replayed transcripts (already folded before a restart or a
rebalance, or sent twice) are recognised by their audio position, never by arrival order, and
not folded twice: see :meth:`ScoringTableEntry.is_replay`.

:meth:`ScoringStage.handle` returns what must be written (scores, dead letters, entries to save);
:mod:`analytics.scoring.agent` does the writing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson
from pydantic import ValidationError

from analytics.scoring.batcher import MicroBatcher
from analytics.scoring.callstate import FoldParams, fold_event, fold_utterance
from analytics.scoring.keywords import KeywordSpotter, categories_or_default
from analytics.scoring.redact import Redactor
from analytics.scoring.sentiment import SentimentScorer
from analytics.scoring.settings import ScoringSettings
from schemas.cache import LruCache
from schemas.deadletter import Source, dead_letter
from schemas.records import CallEvent, CallState, DeadLetter, Score, Sentiment, Transcript
from schemas.rules import RepetitionRule, RulesFile

CACHE_SIZE = 512  # (tenant, campaign) pairs whose redactor / spotter stay compiled

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class SourceRecord:
    """One record read from the transcripts or calls topic, as the stage needs it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass
class StageOutput:
    """What one batch asks to be written: scores, dead letters, and the entries to save
    (call SID key -> (entry, partition)), in first-touched order."""

    scores: list[Score] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    entries: dict[bytes, tuple[ScoringTableEntry, int]] = field(default_factory=dict)


@dataclass
class ScoringTableEntry:
    """One call's value in the call-state table: the public CallState plus what the stage needs to
    resume. Owned by the analytics worker process that holds the call's partition (faust Table,
    changelog-backed)."""

    state: CallState = field(default_factory=CallState)
    last_index: int = -1
    stopped_at_ms: int | None = None
    updated_at_ms: int = 0
    partition: int = 0
    # per stream SID: (utterance_index, end_ms) of the last utterance folded, both audio offsets
    # from that stream's start (a call may stream more than once: Voicebot, then Stream)
    heard: dict[str, tuple[int, int]] = field(default_factory=dict)

    def is_replay(self, transcript: Transcript) -> bool:
        """Was this utterance's audio already folded? Its id is its audio position (the first
        frame's offset), so the same utterance replayed after a crash or a rebalance has the
        same index; one re-cut a few ms apart still starts inside audio already heard."""
        # an entry saved before ``heard`` existed knows only its last index
        unknown = (self.last_index, -1) if not self.heard else (-1, -1)
        index, end_ms = self.heard.get(transcript.stream_sid, unknown)
        return transcript.utterance_index <= index or transcript.start_ms < end_ms

    def mark(self, transcript: Transcript) -> None:
        """Remember ``transcript`` as folded (before it is scored: a batch may hold a replay)."""
        self.last_index = transcript.utterance_index
        self.heard[transcript.stream_sid] = (transcript.utterance_index, transcript.end_ms)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "state": self.state.model_dump(mode="json"),
                "last_index": self.last_index,
                "heard": self.heard,
                "stopped_at_ms": self.stopped_at_ms,
                "updated_at_ms": self.updated_at_ms,
                "partition": self.partition,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> ScoringTableEntry:
        data = orjson.loads(raw)
        return cls(
            state=CallState.model_validate(data["state"]),
            last_index=int(data.get("last_index", -1)),
            heard={
                str(sid): (int(mark[0]), int(mark[1]))
                for sid, mark in (data.get("heard") or {}).items()
            },
            stopped_at_ms=data.get("stopped_at_ms"),
            updated_at_ms=int(data.get("updated_at_ms", 0)),
            partition=int(data.get("partition", 0)),
        )


class TextAnalyser:
    """Redaction and keyword spotting per tenant/campaign, compiled once per pair."""

    def __init__(self, rules: RulesFile, fuzzy_threshold: float = 0.8) -> None:
        self.rules = rules
        self.fuzzy_threshold = fuzzy_threshold
        # Tenants come from the input: bounded, least recently used dropped (rebuilt if asked).
        self._spotters: LruCache[tuple[str, str], KeywordSpotter] = LruCache(CACHE_SIZE)
        self._redactors: LruCache[tuple[str, str], Redactor] = LruCache(CACHE_SIZE)
        self._repetition: LruCache[tuple[str, str], dict[str, float]] = LruCache(CACHE_SIZE)

    def redactor(self, tenant: str, campaign: str) -> Redactor:
        return self._redactors.get_or_make(
            (tenant, campaign), lambda: Redactor(self.rules.resolve(tenant, campaign).redact_pii)
        )

    def spotter(self, tenant: str, campaign: str) -> KeywordSpotter:
        def make() -> KeywordSpotter:
            categories = categories_or_default(self.rules.resolve(tenant, campaign).categories)
            return KeywordSpotter(categories, self.fuzzy_threshold)

        return self._spotters.get_or_make((tenant, campaign), make)

    def repetition(self, tenant: str, campaign: str) -> dict[str, float]:
        """The call's repetition rules, id -> similarity, in priority order (the rules file is
        the one owner of the repeat similarity; routing compares the counts folded with it)."""
        return self._repetition.get_or_make(
            (tenant, campaign),
            lambda: {
                rule.id: rule.similarity
                for rule in self.rules.resolve(tenant, campaign).rules
                if isinstance(rule, RepetitionRule)
            },
        )


class ScoringStage:
    """The scoring engine: redact -> sentiment -> keywords -> call state -> :class:`Score`.

    No faust and no broker: :func:`analytics.scoring.agent.attach_scoring` feeds it batches of
    source records and sends what :meth:`handle` returns. ``redacted_upstream``: the transcripts
    were already redacted by the ASR stage with the same rules (the worker's case), so the text is
    not redacted a second time; standalone it redacts itself.
    """

    def __init__(
        self,
        settings: ScoringSettings,
        rules: RulesFile,
        scorer: SentimentScorer,
        clock: Clock = time.time,
        *,
        redacted_upstream: bool = False,
    ) -> None:
        self.settings = settings
        self.redacted_upstream = redacted_upstream
        self.text = TextAnalyser(rules, settings.fuzzy_threshold)
        self.batcher = MicroBatcher(
            scorer,
            max_wait_ms=settings.batch_max_wait_ms,
            max_size=settings.batch_max_size,
            executor_workers=settings.executor_workers,
        )
        self.params = FoldParams.from_settings(settings)
        self.clock = clock

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def score_transcripts(
        self, items: list[tuple[Transcript, ScoringTableEntry]]
    ) -> list[tuple[Score, ScoringTableEntry]]:
        """Score a batch of final transcripts (one model call) and fold each into its entry.

        ``items`` holds each transcript with its call's entry; several transcripts of one call
        are folded in order (the entries passed must be the same object for the same call).
        """
        prepared: list[tuple[Transcript, str, list[str]]] = []
        for transcript, _ in items:
            kinds: list[str] = []
            if self.redacted_upstream:
                redacted = transcript.text
            else:
                redactor = self.text.redactor(transcript.tenant, transcript.campaign)
                redacted, kinds = redactor.redact(transcript.text)
            prepared.append((transcript, redacted, sorted({*transcript.pii_kinds, *kinds})))
        sentiments: list[Sentiment] = await self.batcher.score_many([p[1] for p in prepared])
        out: list[tuple[Score, ScoringTableEntry]] = []
        for (transcript, redacted, kinds), sentiment, (_, entry) in zip(
            prepared, sentiments, items, strict=True
        ):
            keywords = self.text.spotter(transcript.tenant, transcript.campaign).find(redacted)
            entry.state = fold_utterance(
                entry.state,
                score=sentiment.score,
                keywords=keywords,
                text=redacted,
                start_ms=transcript.start_ms,
                end_ms=transcript.end_ms,
                params=self.params,
                repetition=self.text.repetition(transcript.tenant, transcript.campaign),
            )
            scored_at = self.now_ms()
            entry.updated_at_ms = scored_at
            score = Score(
                call_sid=transcript.call_sid,
                stream_sid=transcript.stream_sid,
                tenant=transcript.tenant,
                campaign=transcript.campaign,
                utterance_id=transcript.utterance_id,
                utterance_index=transcript.utterance_index,
                text=redacted,
                start_ms=transcript.start_ms,
                end_ms=transcript.end_ms,
                sentiment=sentiment,
                keywords=keywords,
                pii_kinds=kinds,
                state=entry.state,
                speech_end_at_ms=transcript.speech_end_at_ms,
                transcript_at_ms=transcript.produced_at_ms,
                scored_at_ms=scored_at,
                latency_ms=float(max(0, scored_at - transcript.produced_at_ms)),
                behind=transcript.behind,
            )
            out.append((score, entry))
        return out

    async def handle(
        self,
        records: Sequence[SourceRecord],
        transcripts_topic: str,
        load: Callable[[bytes, int], ScoringTableEntry],
    ) -> StageOutput:
        """One batch of source records (transcripts and call events, in order) to what must be
        written: scores, dead letters and the call entries to save (``load`` reads an entry)."""
        out = StageOutput()
        entries: dict[bytes, tuple[ScoringTableEntry, int]] = {}
        pending: list[tuple[Transcript, ScoringTableEntry]] = []
        sources: list[SourceRecord] = []
        for record in records:
            try:
                if record.topic == transcripts_topic:
                    transcript = Transcript.model_validate(orjson.loads(record.value))
                    if not transcript.is_final or not transcript.text.strip():
                        continue
                    key = transcript.call_sid.encode()
                    if key not in entries:
                        entries[key] = (load(key, record.partition), record.partition)
                    entry = entries[key][0]
                    if entry.is_replay(transcript):
                        logger.debug("skipping replayed utterance %s", transcript.utterance_id)
                        continue
                    entry.mark(transcript)
                    pending.append((transcript, entry))
                    sources.append(record)
                    out.entries.setdefault(key, entries[key])
                else:
                    call_event = CallEvent.model_validate(orjson.loads(record.value))
                    if call_event.kind not in ("start", "dtmf", "stop"):
                        continue
                    key = call_event.call_sid.encode()
                    if key not in entries:
                        entries[key] = (load(key, record.partition), record.partition)
                    self.apply_event(call_event, entries[key][0])
                out.entries.setdefault(key, entries[key])
            except (ValueError, TypeError, ValidationError) as exc:
                logger.warning("bad record on %s: %s", record.topic, exc)
                out.dead_letters.append(self._dead_letter(record, exc, record.key))
        if pending:
            try:
                scored = await self.score_transcripts(pending)
            except Exception as exc:  # noqa: BLE001  (a model failure must not stop the stream)
                logger.exception("scoring a batch of %d failed", len(pending))
                for (transcript, _), record in zip(pending, sources, strict=True):
                    out.dead_letters.append(
                        self._dead_letter(record, f"scoring failed: {exc}", transcript.call_sid)
                    )
                scored = []
            out.scores.extend(score for score, _ in scored)
        return out

    def _dead_letter(
        self, record: SourceRecord, error: str | BaseException, call_sid: str | bytes | None
    ) -> DeadLetter:
        return dead_letter(
            "scoring",
            error,
            raw=record.value,
            call_sid=call_sid,
            source=Source(record.topic, record.partition, record.offset),
            occurred_at_ms=self.now_ms(),
        )

    def apply_event(self, event: CallEvent, entry: ScoringTableEntry) -> ScoringTableEntry:
        entry.state = fold_event(entry.state, event)
        if event.kind == "stop":
            entry.stopped_at_ms = self.now_ms()
        entry.updated_at_ms = self.now_ms()
        return entry

    def expired(self, entry: ScoringTableEntry, now_ms: int) -> bool:
        if entry.stopped_at_ms is not None:
            return now_ms - entry.stopped_at_ms >= self.settings.drop_after_stop_s * 1000
        return now_ms - entry.updated_at_ms >= self.settings.idle_drop_s * 1000
