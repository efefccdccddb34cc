"""The rule evaluator: a plain class over each call's state, fed scores, call events and ticks.

No framework, no I/O: the Kafka loops and HTTP handlers around it decide when to call it and
what to do with the :class:`~schemas.records.Decision` it returns. Time comes from an injected
clock (seconds, like ``time.time``) so tests move it by hand.

Triggers:
- :meth:`Evaluator.on_score` for every scored utterance: returns ``escalate`` when a rule fires,
  else ``continue`` (``None`` for a call already escalated or an utterance already decided).
- :meth:`Evaluator.on_call_event` for ``start``/``stop``/``dtmf`` on ``agentstream.calls``.
- :meth:`Evaluator.tick` for the rules that fire on the passing of time (``silence``,
  ``max_duration``): a silent caller produces no scores. A heap of due times keeps a tick cheap
  with thousands of live calls.
- :meth:`Evaluator.on_digits` for the ``digits`` a Passthru callback carries.

Every resolved rule of the call's tenant/campaign is checked in priority order (lower first, ties
in file order); the first that matches escalates. At most one ``escalate`` per call.
"""

from __future__ import annotations

import heapq
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from schemas.cache import LruCache
from schemas.records import CallEvent, Decision, Evidence, Score
from schemas.rules import (
    DtmfRule,
    KeywordRule,
    MaxDurationRule,
    RepetitionRule,
    ResolvedRules,
    Rule,
    RulesFile,
    SentimentRollingRule,
    SentimentSingleRule,
    SilenceRule,
)

_WORD = re.compile(r"[a-z0-9']+")
HISTORY_LIMIT = 64
DECIDED_LIMIT = 256
DIGITS_LIMIT = 64  # digits kept per call (Passthru can carry thousands)
RESOLVED_LIMIT = 512  # (tenant, campaign) rule sets kept resolved


@dataclass(frozen=True)
class HeardUtterance:
    """One scored utterance as the evaluator keeps it in a call's history (repeat, evidence)."""

    utterance_id: str
    text: str
    sentiment: float
    confidence: float
    at_ms: int
    tokens: frozenset[str]
    categories: tuple[str, ...] = ()


@dataclass
class CallRecord:
    """What the evaluator knows about one call (its history, deadlines, decided utterances).

    Owned by the routing instance whose consumer group holds the call's scores partition.
    """

    call_sid: str
    first_seen_ms: int
    stream_sid: str = ""
    tenant: str = "default"
    campaign: str = "default"
    started_at_ms: int | None = None
    stopped_at_ms: int | None = None
    last_speech_at_ms: int | None = None
    last_seen_ms: int = 0
    history: deque[HeardUtterance] = field(default_factory=lambda: deque(maxlen=HISTORY_LIMIT))
    keyword_hits: dict[str, int] = field(default_factory=dict)
    state_keyword_hits: dict[str, int] = field(default_factory=dict)
    state_sentiments: list[float] = field(default_factory=list)
    state_repeat_count: int = 0
    digits: list[str] = field(default_factory=list)
    escalation: Decision | None = None
    owned: bool = False  # fed by this instance's consumer group (ticks only for those)
    next_due_ms: int | None = None  # the one live entry of this call in the tick heap
    decided: deque[str] = field(default_factory=lambda: deque(maxlen=DECIDED_LIMIT))

    @property
    def live(self) -> bool:
        return self.stopped_at_ms is None

    def start_ms(self) -> int:
        return self.started_at_ms if self.started_at_ms is not None else self.first_seen_ms


@dataclass(frozen=True)
class Match:
    rule: Rule
    reason: str
    evidence: tuple[HeardUtterance, ...] = ()


def _tokens(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def _quote(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return f"'{text[: limit - 1]}…'" if len(text) > limit else f"'{text}'"


def _label(rule: Rule, detail: str) -> str:
    return f"{rule.description}: {detail}" if rule.description else detail


class Evaluator:
    """Per-call state plus the rules; returns decisions, never publishes them."""

    def __init__(
        self,
        rules: RulesFile,
        clock: Callable[[], float] = time.time,
        max_score_age_s: float | None = None,
    ) -> None:
        self._rules = rules
        self._clock = clock
        self._max_score_age_ms = None if max_score_age_s is None else int(max_score_age_s * 1000)
        self._resolved: LruCache[tuple[str, str], ResolvedRules] = LruCache(RESOLVED_LIMIT)
        self.calls: dict[str, CallRecord] = {}
        self._due: list[tuple[int, str]] = []

    # --- rules ----------------------------------------------------------------------------------

    @property
    def rules(self) -> RulesFile:
        return self._rules

    def set_rules(self, rules: RulesFile) -> None:
        """Swap the rules file (reload) keeping every call's state."""
        self._rules = rules
        self._resolved.clear()
        self._due = []
        for record in self.calls.values():
            record.next_due_ms = None
            self._schedule(record)

    def resolve(self, tenant: str, campaign: str) -> ResolvedRules:
        return self._resolved.get_or_make(
            (tenant, campaign), lambda: self._rules.resolve(tenant, campaign)
        )

    # --- state ----------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _record(self, call_sid: str, tenant: str, campaign: str, stream_sid: str) -> CallRecord:
        now = self._now_ms()
        record = self.calls.get(call_sid)
        if record is None:
            record = self.calls[call_sid] = CallRecord(call_sid, first_seen_ms=now)
        if tenant != "default" or record.tenant == "default":
            record.tenant = tenant
        if campaign != "default" or record.campaign == "default":
            record.campaign = campaign
        record.stream_sid = stream_sid or record.stream_sid
        record.last_seen_ms = now
        return record

    def is_escalated(self, call_sid: str) -> bool:
        record = self.calls.get(call_sid)
        return record is not None and record.escalation is not None

    def note_decision(self, decision: Decision) -> None:
        """A decision already published (rebuilt from the topic, or by another instance)."""
        record = self._record(
            decision.call_sid, decision.tenant, decision.campaign, decision.stream_sid
        )
        if decision.utterance_id:
            record.decided.append(decision.utterance_id)
        if decision.decision == "escalate" and record.escalation is None:
            record.escalation = decision

    def evict(self, idle_s: float) -> int:
        """Forget calls not heard of for ``idle_s``; returns how many."""
        cutoff = self._now_ms() - int(idle_s * 1000)
        stale = [sid for sid, rec in self.calls.items() if rec.last_seen_ms < cutoff]
        for sid in stale:
            del self.calls[sid]
        return len(stale)

    # --- triggers -------------------------------------------------------------------------------

    def on_call_event(self, event: CallEvent) -> Decision | None:
        if event.kind not in ("start", "stop", "dtmf"):
            return None
        record = self._record(event.call_sid, event.tenant, event.campaign, event.stream_sid)
        record.owned = True
        if event.kind == "start":
            record.started_at_ms = event.occurred_at_ms
            record.stopped_at_ms = None
        elif event.kind == "stop":
            record.stopped_at_ms = event.occurred_at_ms
            return None
        elif event.dtmf_digit:
            record.digits.append(event.dtmf_digit)
            del record.digits[:-DIGITS_LIMIT]
        self._schedule(record)
        return self._evaluate(record, score=None, kinds=("dtmf", "max_duration"))

    def on_digits(
        self, call_sid: str, digits: str, tenant: str = "default", campaign: str = "default"
    ) -> Decision | None:
        """Digits from a Passthru callback (``digits="0"``): only ``dtmf`` rules apply."""
        record = self._record(call_sid, tenant, campaign, "")
        record.digits.extend(ch for ch in digits[:DIGITS_LIMIT] if ch.strip())
        del record.digits[:-DIGITS_LIMIT]  # bounded per call: the latest digits count
        return self._evaluate(record, score=None, kinds=("dtmf",))

    def on_score(self, score: Score) -> Decision | None:
        now = self._now_ms()
        record = self._record(score.call_sid, score.tenant, score.campaign, score.stream_sid)
        record.owned = True
        if score.utterance_id in record.decided:
            return None
        if record.escalation is not None:
            return None
        at_ms = score.speech_end_at_ms or score.scored_at_ms
        categories = tuple(hit.category for hit in score.keywords)
        record.history.append(
            HeardUtterance(
                score.utterance_id,
                score.text,
                score.sentiment.score,
                score.sentiment.confidence,
                at_ms,
                _tokens(score.text),
                categories,
            )
        )
        for category in categories:
            record.keyword_hits[category] = record.keyword_hits.get(category, 0) + 1
        state = score.state
        record.state_keyword_hits = dict(state.keyword_hits)
        record.state_sentiments = list(state.sentiment_last_n)
        record.state_repeat_count = state.repeat_count
        if state.last_dtmf and (not record.digits or record.digits[-1] != state.last_dtmf):
            record.digits.append(state.last_dtmf)
        if record.started_at_ms is None and state.started_at_ms:
            record.started_at_ms = state.started_at_ms
        record.last_speech_at_ms = max(record.last_speech_at_ms or 0, at_ms)
        record.decided.append(score.utterance_id)
        self._schedule(record)
        if self._max_score_age_ms is not None and now - score.scored_at_ms > self._max_score_age_ms:
            return None  # a replay of old history: remember it, decide nothing
        return self._evaluate(record, score=score, kinds=None)

    def tick(self, limit: int | None = None) -> list[Decision]:
        """Decisions for calls whose silence / max-duration deadline has passed.

        ``limit`` bounds the calls looked at in one go so a burst of deadlines cannot stall the
        event loop; :attr:`due_now` says whether more are waiting.
        """
        now = self._now_ms()
        decisions: list[Decision] = []
        looked = 0
        while self._due and self._due[0][0] <= now:
            if limit is not None and looked >= limit:
                break
            due, call_sid = heapq.heappop(self._due)
            record = self.calls.get(call_sid)
            if record is None or record.next_due_ms != due:
                continue  # superseded by a later schedule
            record.next_due_ms = None
            looked += 1
            if record.escalation is not None or not record.live:
                continue
            decision = self._evaluate(record, score=None, kinds=("silence", "max_duration"))
            if decision is not None:
                decisions.append(decision)
            else:
                self._schedule(record)
        return decisions

    def _schedule(self, record: CallRecord) -> None:
        """Push the next time a time-based rule of this call could fire."""
        if record.escalation is not None or not record.live or not record.owned:
            return
        due: list[int] = []
        for rule in self.resolve(record.tenant, record.campaign).rules:
            if isinstance(rule, SilenceRule):
                since = record.last_speech_at_ms or record.start_ms()
                due.append(since + int(rule.seconds * 1000))
            elif isinstance(rule, MaxDurationRule):
                due.append(record.start_ms() + int(rule.seconds * 1000))
        now = self._now_ms()
        upcoming = [t for t in due if t > now] or due
        if upcoming:
            when = min(upcoming)
            if record.next_due_ms != when:
                record.next_due_ms = when
                heapq.heappush(self._due, (when, record.call_sid))

    def due_now(self) -> bool:
        return bool(self._due) and self._due[0][0] <= self._now_ms()

    # --- evaluation -----------------------------------------------------------------------------

    def _evaluate(
        self, record: CallRecord, score: Score | None, kinds: Iterable[str] | None
    ) -> Decision | None:
        if record.escalation is not None:
            return None
        allowed = None if kinds is None else set(kinds)
        now = self._now_ms()
        for rule in self.resolve(record.tenant, record.campaign).rules:
            if allowed is not None and rule.kind not in allowed:
                continue
            match = self._match(rule, record, now)
            if match is not None:
                decision = self._decision(record, score, match, now)
                record.escalation = decision
                return decision
        if score is None:
            return None
        return self._decision(record, score, None, now)

    def _match(self, rule: Rule, record: CallRecord, now: int) -> Match | None:
        if isinstance(rule, SentimentRollingRule):
            return self._sentiment_rolling(rule, record)
        if isinstance(rule, SentimentSingleRule):
            return self._sentiment_single(rule, record)
        if isinstance(rule, KeywordRule):
            return self._keyword(rule, record)
        if isinstance(rule, DtmfRule):
            pressed = [d for d in record.digits if d in rule.digits]
            if pressed:
                return Match(rule, _label(rule, f"caller pressed {pressed[-1]}"))
            return None
        if isinstance(rule, SilenceRule):
            since = record.last_speech_at_ms or record.start_ms()
            quiet_s = (now - since) / 1000
            if record.live and quiet_s >= rule.seconds:
                return Match(rule, _label(rule, f"caller silent for {quiet_s:.0f} s"))
            return None
        if isinstance(rule, RepetitionRule):
            return self._repetition(rule, record)
        if isinstance(rule, MaxDurationRule):
            elapsed_s = (now - record.start_ms()) / 1000
            if record.live and elapsed_s >= rule.seconds:
                return Match(rule, _label(rule, f"caller with the bot for {elapsed_s:.0f} s"))
            return None
        return None  # pragma: no cover - every kind is handled above

    def _sentiment_rolling(self, rule: SentimentRollingRule, record: CallRecord) -> Match | None:
        window = list(record.history)
        if rule.window_s is not None and window:
            latest = window[-1].at_ms
            window = [u for u in window if latest - u.at_ms <= rule.window_s * 1000]
        if rule.last_n is not None:
            window = window[-rule.last_n :]
        values = [u.sentiment for u in window]
        evidence = tuple(window)
        # After a restart our history is short; the scoring stage's rolling list is not.
        if (
            rule.window_s is None
            and rule.last_n is not None
            and len(record.state_sentiments) > len(values)
        ):
            values = record.state_sentiments[-rule.last_n :]
        if len(values) < rule.min_utterances:
            return None
        mean = sum(values) / len(values)
        if mean >= rule.threshold:
            return None
        span = f"the last {len(values)} utterances"
        if rule.window_s is not None:
            span += f" (within {rule.window_s:g} s)"
        detail = f"mean sentiment {mean:.2f} over {span} is below {rule.threshold:g}"
        return Match(rule, _label(rule, detail), evidence)

    def _sentiment_single(self, rule: SentimentSingleRule, record: CallRecord) -> Match | None:
        if not record.history:
            return None
        last = record.history[-1]
        if last.sentiment >= rule.threshold or last.confidence < rule.min_confidence:
            return None
        detail = f"utterance sentiment {last.sentiment:.2f} is below {rule.threshold:g}"
        return Match(rule, _label(rule, f"{detail}: {_quote(last.text)}"), (last,))

    def _keyword(self, rule: KeywordRule, record: CallRecord) -> Match | None:
        hits = sum(
            max(record.keyword_hits.get(c, 0), record.state_keyword_hits.get(c, 0))
            for c in rule.categories
        )
        if hits < rule.min_hits:
            return None
        wanted = set(rule.categories)
        evidence = tuple(u for u in record.history if wanted.intersection(u.categories))[-5:]
        found = sorted({c for u in evidence for c in u.categories if c in wanted}) or sorted(wanted)
        detail = f"{', '.join(found)} ({hits} hit{'s' if hits != 1 else ''})"
        if evidence:
            detail += f": {_quote(evidence[-1].text)}"
        return Match(rule, _label(rule, detail), evidence)

    def _repetition(self, rule: RepetitionRule, record: CallRecord) -> Match | None:
        history = list(record.history)
        run = 0
        for later, earlier in zip(reversed(history), list(reversed(history))[1:], strict=False):
            if _jaccard(later.tokens, earlier.tokens) < rule.similarity:
                break
            run += 1
        run = max(run, record.state_repeat_count)
        if run < rule.count:
            return None
        evidence = tuple(history[-(run + 1) :])
        said = _quote(history[-1].text) if history else "the same thing"
        detail = f"caller repeated themselves {run} time{'s' if run != 1 else ''}: {said}"
        return Match(rule, _label(rule, detail), evidence)

    def _decision(
        self, record: CallRecord, score: Score | None, match: Match | None, now: int
    ) -> Decision:
        used = match.evidence if match else ()
        evidence = [Evidence(utterance_id=u.utterance_id, text=u.text) for u in used]
        return Decision(
            call_sid=record.call_sid,
            stream_sid=record.stream_sid,
            tenant=record.tenant,
            campaign=record.campaign,
            decision="escalate" if match else "continue",
            rule_id=match.rule.id if match else None,
            reason=match.reason if match else "no rule matched",
            target_group=match.rule.target if match else None,
            evidence=evidence,
            utterance_id=score.utterance_id if score else None,
            speech_end_at_ms=score.speech_end_at_ms if score else 0,
            decided_at_ms=now,
            latency_ms=float(now - score.scored_at_ms) if score else 0.0,
        )
