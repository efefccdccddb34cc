"""The dashboard engine: topic records in, calls ranked by risk and per-call details out.

A plain class with no I/O and an injected clock. Routing's dashboard reader feeds it every call
event, transcript, score and decision; the HTTP layer asks it for the ranked rows (the page's
first paint), one call's details (when a supervisor opens it), and :meth:`Board.drain` (the
rows that changed since the last drain, sent to every open page as one server-sent event).

Rows and details are plain JSON-ready dicts; transcript text is already PII-redacted by the
analytics worker (this engine never sees raw speech). Ended calls stay on the board for
``linger_ms`` after their last record (marked ended), calls heard of no more for ``idle_ms``
leave it, both by the records' own times (so history read at start does not linger); each call
keeps at most ``max_lines`` utterances and ``max_decisions`` decisions.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from routing.dashboard.proximity import CallFacts, nearest
from schemas.cache import LruCache
from schemas.records import CallEvent, Decision, Score, Transcript
from schemas.rules import ResolvedRules, RulesFile

RISK_STEP = 0.05  # a row is resent when time alone moved its risk this much


@dataclass
class _Line:
    utterance_id: str
    index: int
    text: str
    start_ms: int
    end_ms: int
    sentiment: float | None = None
    categories: tuple[str, ...] = ()


@dataclass
class WatchedCall:
    """One call on the board; every routing instance's dashboard reader owns its own copy."""

    call_sid: str
    first_seen_ms: int
    tenant: str = "default"
    campaign: str = "default"
    caller: str | None = None
    started_at_ms: int | None = None
    stopped_at_ms: int | None = None
    stop_reason: str | None = None
    last_seen_ms: int = 0
    last_speech_at_ms: int | None = None
    lines: deque[_Line] = field(default_factory=deque)
    line_by_id: dict[str, _Line] = field(default_factory=dict)
    partial: str = ""
    sentiments: deque[tuple[int, float]] = field(default_factory=deque)  # (end_ms, score)
    trend: float = 0.0
    repeat_count: int = 0
    keyword_hits: dict[str, int] = field(default_factory=dict)
    hits: deque[dict[str, Any]] = field(default_factory=deque)
    decisions: deque[dict[str, Any]] = field(default_factory=deque)
    escalation: Decision | None = None
    scored: set[str] = field(default_factory=set)
    risk: float = 0.0
    near_rule: str | None = None
    sent_risk: float = -1.0  # the risk in the last row sent (time moves risk in small steps)

    @property
    def live(self) -> bool:
        return self.stopped_at_ms is None

    def start_ms(self) -> int:
        return self.started_at_ms if self.started_at_ms is not None else self.first_seen_ms


@dataclass(frozen=True)
class Update:
    """What changed since the last drain: rows to upsert, calls whose details changed (an open
    call refetches them) and calls that left the board."""

    version: int
    now_ms: int
    rows: list[dict[str, Any]]
    touched: list[str]
    removed: list[str]


class Board:
    """Every watched call, ranked by risk; fed records, asked for rows, details and updates."""

    def __init__(
        self,
        rules: RulesFile,
        *,
        clock: Callable[[], float] = time.time,
        linger_ms: int = 60_000,
        idle_ms: int = 2 * 3600 * 1000,
        max_lines: int = 300,
        max_decisions: int = 50,
    ) -> None:
        self._rules = rules
        # tenants come from the input: bounded, least recently used recomputed
        self._resolved: LruCache[tuple[str, str], ResolvedRules] = LruCache(512)
        self._clock = clock
        self.linger_ms = linger_ms
        self.idle_ms = idle_ms
        self.max_lines = max_lines
        self.max_decisions = max_decisions
        self.calls: dict[str, WatchedCall] = {}
        self.version = 0
        self._dirty: set[str] = set()  # the row changed
        self._touched: set[str] = set()  # only the details changed
        self._removed: set[str] = set()

    def set_rules(self, rules: RulesFile) -> None:
        self._rules = rules
        self._resolved.clear()
        self._dirty.update(self.calls)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _call(self, call_sid: str, tenant: str, campaign: str, at_ms: int) -> WatchedCall:
        """The call's entry; ``at_ms`` is the record's own time (replayed history stays old)."""
        call = self.calls.get(call_sid)
        if call is None:
            call = self.calls[call_sid] = WatchedCall(call_sid, first_seen_ms=at_ms)
            self._removed.discard(call_sid)
        if tenant != "default":
            call.tenant = tenant
        if campaign != "default":
            call.campaign = campaign
        call.last_seen_ms = max(call.last_seen_ms, at_ms)
        self._touched.add(call_sid)
        return call

    # --- records in -----------------------------------------------------------------------------

    def apply_call_event(self, event: CallEvent) -> None:
        if event.kind not in ("start", "stop"):
            return  # callbacks and DTMF do not change what a supervisor sees
        call = self._call(event.call_sid, event.tenant, event.campaign, event.occurred_at_ms)
        self._dirty.add(event.call_sid)
        if event.kind == "start":
            call.started_at_ms = event.occurred_at_ms
            call.stopped_at_ms = None
            call.caller = event.from_number or call.caller
        else:
            call.stopped_at_ms = event.occurred_at_ms
            call.stop_reason = event.stop_reason
            call.partial = ""

    def apply_transcript(self, transcript: Transcript) -> None:
        call = self._call(
            transcript.call_sid, transcript.tenant, transcript.campaign, transcript.produced_at_ms
        )
        if not transcript.is_final:
            call.partial = transcript.text
            return
        call.partial = ""
        if transcript.utterance_id in call.line_by_id:
            return
        self._add_line(
            call,
            _Line(
                transcript.utterance_id,
                transcript.utterance_index,
                transcript.text,
                transcript.start_ms,
                transcript.end_ms,
            ),
        )

    def _add_line(self, call: WatchedCall, line: _Line) -> None:
        call.lines.append(line)
        call.line_by_id[line.utterance_id] = line
        while len(call.lines) > self.max_lines:
            old = call.lines.popleft()
            call.line_by_id.pop(old.utterance_id, None)

    def apply_score(self, score: Score) -> None:
        call = self._call(score.call_sid, score.tenant, score.campaign, score.scored_at_ms)
        if score.utterance_id in call.scored:
            return
        call.scored.add(score.utterance_id)
        self._dirty.add(score.call_sid)
        categories = tuple(hit.category for hit in score.keywords)
        line = call.line_by_id.get(score.utterance_id)
        if line is None:  # the score came first, or the transcript was not read
            line = _Line(
                score.utterance_id, score.utterance_index, score.text, score.start_ms, score.end_ms
            )
            self._add_line(call, line)
        line.sentiment = round(score.sentiment.score, 3)
        line.categories = categories
        call.sentiments.append((score.end_ms, line.sentiment))
        while len(call.sentiments) > self.max_lines:
            call.sentiments.popleft()
        call.trend = score.state.sentiment_trend
        call.repeat_count = score.state.repeat_count
        if score.speech_end_at_ms:
            call.last_speech_at_ms = max(call.last_speech_at_ms or 0, score.speech_end_at_ms)
        for hit in score.keywords:
            call.keyword_hits[hit.category] = call.keyword_hits.get(hit.category, 0) + 1
            call.hits.append(
                {"category": hit.category, "matched": hit.matched, "utterance": line.index}
            )
            while len(call.hits) > self.max_decisions:
                call.hits.popleft()

    def apply_decision(self, decision: Decision) -> None:
        call = self._call(
            decision.call_sid, decision.tenant, decision.campaign, decision.decided_at_ms
        )
        if decision.decision == "escalate" and call.escalation is None:
            call.escalation = decision
            self._dirty.add(decision.call_sid)
        elif decision.decision == "escalate":
            return  # the same escalation read back again
        call.decisions.append(
            {
                "decision": decision.decision,
                "rule_id": decision.rule_id,
                "reason": decision.reason,
                "target_group": decision.target_group,
                "utterance_id": decision.utterance_id,
                "at_ms": decision.decided_at_ms,
            }
        )
        while len(call.decisions) > self.max_decisions:
            call.decisions.popleft()

    # --- time -----------------------------------------------------------------------------------

    def tick(self) -> None:
        """Drop ended and idle calls; rows whose risk moved with time become dirty."""
        now = self._now_ms()
        for sid, call in list(self.calls.items()):
            ended = call.stopped_at_ms is not None and now - call.last_seen_ms >= self.linger_ms
            if ended or now - call.last_seen_ms >= self.idle_ms:
                del self.calls[sid]
                self._dirty.discard(sid)
                self._touched.discard(sid)
                self._removed.add(sid)
            elif call.live and call.escalation is None:
                rule = call.near_rule
                self._rank(call, now)
                if call.near_rule != rule or abs(call.risk - call.sent_risk) >= RISK_STEP:
                    self._dirty.add(sid)

    def _rank(self, call: WatchedCall, now: int) -> None:
        if call.escalation is not None:
            call.risk, call.near_rule = 1.0, call.escalation.rule_id
            return
        key = (call.tenant, call.campaign)
        resolved = self._resolved.get_or_make(key, lambda: self._rules.resolve(*key))
        facts = CallFacts(
            sentiments=[s for _, s in call.sentiments],
            keyword_hits=call.keyword_hits,
            repeat_count=call.repeat_count,
            live=call.live,
            started_at_ms=call.start_ms(),
            last_speech_at_ms=call.last_speech_at_ms,
            now_ms=now,
        )
        rule, value = nearest(resolved.rules, facts)
        call.near_rule, call.risk = rule, round(value, 2)

    # --- views out ------------------------------------------------------------------------------

    def row(self, call: WatchedCall) -> dict[str, Any]:
        esc = call.escalation
        call.sent_risk = call.risk
        return {
            "call_sid": call.call_sid,
            "caller": call.caller,
            "tenant": call.tenant,
            "campaign": call.campaign,
            "started_at_ms": call.start_ms(),
            "ended_at_ms": call.stopped_at_ms,
            "live": call.live,
            "sentiment": call.sentiments[-1][1] if call.sentiments else None,
            "trend": round(call.trend, 3),
            "keywords": dict(call.keyword_hits),
            "risk": call.risk,
            "near_rule": call.near_rule,
            "escalation": None
            if esc is None
            else {
                "rule_id": esc.rule_id,
                "reason": esc.reason,
                "target_group": esc.target_group,
                "at_ms": esc.decided_at_ms,
            },
        }

    def rows(self) -> list[dict[str, Any]]:
        """Every call on the board, ranked: live before ended, escalated first, then by risk."""
        now = self._now_ms()
        for call in self.calls.values():
            self._rank(call, now)
        ranked = sorted(
            self.calls.values(),
            key=lambda c: (not c.live, c.escalation is None, -c.risk, c.start_ms()),
        )
        return [self.row(call) for call in ranked]

    def detail(self, call_sid: str) -> dict[str, Any] | None:
        call = self.calls.get(call_sid)
        if call is None:
            return None
        self._rank(call, self._now_ms())
        out = self.row(call)
        out["utterances"] = len(call.lines)
        out["partial"] = call.partial
        out["transcript"] = [
            {
                "utterance_id": line.utterance_id,
                "index": line.index,
                "text": line.text,
                "start_ms": line.start_ms,
                "end_ms": line.end_ms,
                "sentiment": line.sentiment,
                "categories": list(line.categories),
            }
            for line in call.lines
        ]
        out["sentiment_series"] = [[end_ms, value] for end_ms, value in call.sentiments]
        out["keyword_hits"] = list(call.hits)
        out["decisions"] = list(call.decisions)
        return out

    def drain(self) -> Update | None:
        """The rows changed since the last drain (None when nothing changed)."""
        if not self._dirty and not self._touched and not self._removed:
            return None
        now = self._now_ms()
        self.version += 1
        rows = []
        for sid in sorted(self._dirty):
            call = self.calls.get(sid)
            if call is not None:
                self._rank(call, now)
                rows.append(self.row(call))
        touched = sorted(self._touched - self._dirty - self._removed)
        update = Update(self.version, now, rows, touched, sorted(self._removed))
        self._dirty.clear()
        self._touched.clear()
        self._removed.clear()
        return update
