"""Call summaries: a pure fold of one call's records into a :class:`~schemas.records.CallSummary`.

No I/O. :class:`SummaryDraft` folds the records of one call (call events, scores, decisions)
and is idempotent per utterance, so a redelivered score is not counted twice.
:class:`SummaryBook` holds the drafts of every call this instance owns and says which
summaries are due: a call that stopped ``settle_ms`` ago (long enough for its last score,
decision and Passthru answer to land), or one not heard of for ``idle_ms`` (end reason
``idle_timeout``). A fact that arrives after a call's summary was published (a late Passthru
answer, say) makes the summary due again with the next ``revision``; the topic is compacted,
so the latest revision is the one that stays.

Times: ``duration_ms`` is wall clock (stream start to stop, as ingest stamped them);
``talk_time_ms`` and the silences are audio positions from the utterances (VAD segments).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from schemas.records import CallEvent, CallSummary, Decision, Score

IDLE_TIMEOUT = "idle_timeout"


@dataclass(frozen=True)
class _Utterance:
    index: int
    start_ms: int
    end_ms: int
    sentiment: float


@dataclass
class SummaryDraft:
    """Everything one call's summary is built from; owned by the routing instance that owns
    the call's partition (the evaluator's consumer group)."""

    call_sid: str
    stream_sid: str = ""
    tenant: str = "default"
    campaign: str = "default"
    from_number: str | None = None
    started_at_ms: int | None = None
    stopped_at_ms: int | None = None
    stop_reason: str | None = None
    first_seen_ms: int | None = None
    last_seen_ms: int = 0
    utterances: dict[str, _Utterance] = field(default_factory=dict)
    keyword_hits: dict[str, dict[str, int]] = field(default_factory=dict)
    pii_kinds: set[str] = field(default_factory=set)
    escalation: Decision | None = None
    decided: set[str] = field(default_factory=set)
    decision_count: int = 0
    passthru_answer: str | None = None
    passthru_complete: bool | None = None
    passthru_at_ms: int | None = None
    untranscribed: set[int] = field(default_factory=set)  # gap markers' utterance indexes

    def _seen(self, tenant: str, campaign: str, stream_sid: str, at_ms: int) -> None:
        if tenant != "default":
            self.tenant = tenant
        if campaign != "default":
            self.campaign = campaign
        self.stream_sid = stream_sid or self.stream_sid
        if self.first_seen_ms is None or at_ms < self.first_seen_ms:
            self.first_seen_ms = at_ms
        self.last_seen_ms = max(self.last_seen_ms, at_ms)

    def on_call_event(self, event: CallEvent) -> bool:
        """Fold a call event; True when it changed the summary."""
        self._seen(event.tenant, event.campaign, event.stream_sid, event.occurred_at_ms)
        if event.kind == "start":
            self.started_at_ms = event.occurred_at_ms
            self.from_number = event.from_number or self.from_number
            return True
        if event.kind == "stop":
            if self.stopped_at_ms is None:
                self.stopped_at_ms = event.occurred_at_ms
                self.stop_reason = event.stop_reason or "stopped"
            return True
        if event.kind == "passthru" and event.answer and self.passthru_answer is None:
            self.passthru_answer = event.answer
            self.passthru_at_ms = event.occurred_at_ms
            self.passthru_complete = event.complete
            return True
        return False

    def on_gap(self, score: Score) -> bool:
        """A gap marker: an utterance heard but not transcribed (the ASR worker was behind)."""
        self._seen(score.tenant, score.campaign, score.stream_sid, score.scored_at_ms)
        if score.utterance_index in self.untranscribed:
            return False
        self.untranscribed.add(score.utterance_index)
        return True

    def on_score(self, score: Score) -> bool:
        self._seen(score.tenant, score.campaign, score.stream_sid, score.scored_at_ms)
        if score.utterance_id in self.utterances:
            return False
        self.utterances[score.utterance_id] = _Utterance(
            score.utterance_index, score.start_ms, score.end_ms, score.sentiment.score
        )
        for hit in score.keywords:
            self.keyword_hits.setdefault(score.utterance_id, {})
            per = self.keyword_hits[score.utterance_id]
            per[hit.category] = per.get(hit.category, 0) + 1
        self.pii_kinds.update(score.pii_kinds)
        return True

    def on_decision(self, decision: Decision) -> bool:
        self._seen(decision.tenant, decision.campaign, decision.stream_sid, decision.decided_at_ms)
        key = f"{decision.utterance_id}|{decision.decision}|{decision.rule_id}"
        if key in self.decided:
            return False
        self.decided.add(key)
        self.decision_count += 1
        if decision.decision == "escalate" and self.escalation is None:
            self.escalation = decision
        return True

    # --- the summary --------------------------------------------------------------------------

    def ended_at_ms(self) -> int:
        return self.stopped_at_ms if self.stopped_at_ms is not None else self.last_seen_ms

    def build(self, *, summarised_at_ms: int, revision: int = 1) -> CallSummary:
        ordered = sorted(self.utterances.values(), key=lambda u: (u.index, u.start_ms))
        ended = self.ended_at_ms()
        start = self.started_at_ms if self.started_at_ms is not None else self.first_seen_ms
        duration = max(0, ended - start) if start is not None else 0
        talk = sum(max(0, u.end_ms - u.start_ms) for u in ordered)
        silence = _longest_silence(ordered, duration)
        sentiments = [u.sentiment for u in ordered]
        hits: dict[str, int] = {}
        for per in self.keyword_hits.values():
            for category, count in per.items():
                hits[category] = hits.get(category, 0) + count
        esc = self.escalation
        return CallSummary(
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            tenant=self.tenant,
            campaign=self.campaign,
            from_number=self.from_number,
            started_at_ms=start,
            ended_at_ms=ended,
            end_reason=self.stop_reason if self.stopped_at_ms is not None else IDLE_TIMEOUT,
            duration_ms=duration,
            talk_time_ms=talk,
            silence_time_ms=max(0, duration - talk),
            longest_silence_ms=silence,
            utterance_count=len(ordered),
            sentiment_start=round(sentiments[0], 4) if sentiments else None,
            sentiment_end=round(sentiments[-1], 4) if sentiments else None,
            sentiment_min=round(min(sentiments), 4) if sentiments else None,
            sentiment_mean=round(sum(sentiments) / len(sentiments), 4) if sentiments else None,
            keyword_hits=dict(sorted(hits.items())),
            pii_kinds=sorted(self.pii_kinds),
            escalated=esc is not None,
            escalation_rule_id=esc.rule_id if esc else None,
            escalation_reason=esc.reason if esc else None,
            escalation_target_group=esc.target_group if esc else None,
            escalated_at_ms=esc.decided_at_ms if esc else None,
            decision_count=self.decision_count,
            passthru_answer=self.passthru_answer,
            passthru_complete=self.passthru_complete,
            passthru_at_ms=self.passthru_at_ms,
            untranscribed_utterances=len(self.untranscribed),
            revision=revision,
            summarised_at_ms=summarised_at_ms,
        )


def _longest_silence(ordered: list[_Utterance], duration_ms: int) -> int:
    """Longest stretch without caller speech: before the first utterance, between two, after
    the last (audio positions; the call's duration bounds the trailing one)."""
    if not ordered:
        return duration_ms
    gaps = [ordered[0].start_ms]
    gaps.extend(b.start_ms - a.end_ms for a, b in zip(ordered, ordered[1:], strict=False))
    last_end = max(u.end_ms for u in ordered)
    if duration_ms > last_end:
        gaps.append(duration_ms - last_end)
    return max(0, *gaps)


@dataclass
class _Entry:
    draft: SummaryDraft
    published: int = 0  # revisions published so far
    dirty: bool = True  # changed since the last published revision
    published_at_ms: int | None = None


class SummaryBook:
    """The drafts of the calls this instance owns, and which summaries are due now."""

    def __init__(
        self,
        *,
        settle_ms: int = 2000,
        idle_ms: int = 30 * 60 * 1000,
        keep_ms: int = 10 * 60 * 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settle_ms = settle_ms
        self.idle_ms = idle_ms
        self.keep_ms = keep_ms
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _entry(self, call_sid: str) -> _Entry:
        entry = self._entries.get(call_sid)
        if entry is None:
            entry = self._entries[call_sid] = _Entry(SummaryDraft(call_sid))
        return entry

    def draft(self, call_sid: str) -> SummaryDraft | None:
        entry = self._entries.get(call_sid)
        return entry.draft if entry else None

    def on_call_event(self, event: CallEvent) -> None:
        if event.kind not in ("start", "stop", "passthru"):
            return
        if event.kind == "passthru" and event.call_sid not in self._entries:
            return  # a callback for a call this instance does not own
        entry = self._entry(event.call_sid)
        if entry.draft.on_call_event(event):
            entry.dirty = True

    def on_score(self, score: Score) -> None:
        if score.marker is not None and score.marker != "gap":
            return  # a watermark, not an utterance
        entry = self._entry(score.call_sid)
        folded = entry.draft.on_gap(score) if score.marker else entry.draft.on_score(score)
        if folded:
            entry.dirty = True

    def on_decision(self, decision: Decision) -> None:
        entry = self._entries.get(decision.call_sid)
        if entry is not None and entry.draft.on_decision(decision):
            entry.dirty = True

    def forget(self, call_sid: str) -> None:
        """A call whose partition moved to another instance."""
        self._entries.pop(call_sid, None)

    def due(self) -> list[CallSummary]:
        """Summaries to publish now (first or later revisions); drops calls long published."""
        now = self._now_ms()
        out: list[CallSummary] = []
        for call_sid, entry in list(self._entries.items()):
            draft = entry.draft
            ended = draft.stopped_at_ms is not None and now - draft.stopped_at_ms >= self.settle_ms
            idle = draft.stopped_at_ms is None and now - draft.last_seen_ms >= self.idle_ms
            if entry.dirty and (ended or idle):
                entry.published += 1
                entry.dirty = False
                entry.published_at_ms = now
                out.append(draft.build(summarised_at_ms=now, revision=entry.published))
            elif (
                not entry.dirty
                and entry.published_at_ms is not None
                and now - max(entry.published_at_ms, draft.last_seen_ms) >= self.keep_ms
            ):
                del self._entries[call_sid]
        return out


class DecisionSink(Protocol):
    def publish_decision(self, decision: Decision) -> None: ...

    def publish_call_event(self, event: CallEvent) -> None: ...


class SummaryTap:
    """The router's sink, passing what the router publishes (its decisions and the Passthru
    answers it gives) to the summary book on the way to Kafka."""

    def __init__(self, inner: DecisionSink, book: SummaryBook) -> None:
        self.inner = inner
        self.book = book

    def publish_decision(self, decision: Decision) -> None:
        self.book.on_decision(decision)
        self.inner.publish_decision(decision)

    def publish_call_event(self, event: CallEvent) -> None:
        self.book.on_call_event(event)
        self.inner.publish_call_event(event)
