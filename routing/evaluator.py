"""The rule evaluator: a plain class over each call's state, fed scores, call events and ticks.

No framework, no I/O: the Kafka loops and HTTP handlers around it decide when to call it and
what to do with the :class:`~schemas.records.Decision` it returns. Time comes from an injected
clock (seconds, like ``time.time``) so tests move it by hand.

Triggers:
- :meth:`Evaluator.on_score` for every scored utterance: returns ``escalate`` when a rule fires,
  else ``continue`` (``None`` for a call already escalated or an utterance already decided).
- :meth:`Evaluator.on_call_event` for ``start``/``stop``/``dtmf`` on ``agentstream.calls``.
- :meth:`Evaluator.on_progress` for the pipeline's watermarks (marker scores: the call's audio
  is analysed up to an offset): the rules on the passing of time (``silence``,
  ``max_duration``) measure the call's own audio time, the offsets of what was heard, never the
  wall clock. A stalled pipeline or broker sends no watermark, so it never looks like a silent
  caller: the rule waits until the audio is analysed. (:meth:`Evaluator.tick` is kept for the
  service loop and decides nothing.)
- :meth:`Evaluator.on_digits` for the ``digits`` a Passthru callback carries.

Every resolved rule of the call's tenant/campaign is checked in priority order (lower first, ties
in file order); the first that matches escalates. At most one ``escalate`` per call.

Keyword and repeat counts are not computed here: the scoring worker owns them (it folds every
utterance once, keeps them across restarts in its changelog, and counts repeats with each
repetition rule's ``similarity``); the evaluator reads them from the latest ``Score.state`` and
compares them with the rule. A score is evaluated once: a replay (same utterance id, or audio
already heard on that stream) changes nothing and decides nothing.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from schemas.cache import LruCache
from schemas.records import CallEvent, CallState, Decision, Evidence, Score
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

HISTORY_LIMIT = 64
DECIDED_LIMIT = 256
DIGITS_LIMIT = 64  # digits kept per call (Passthru can carry thousands)
RESOLVED_LIMIT = 512  # (tenant, campaign) rule sets kept resolved


@dataclass(frozen=True)
class HeardUtterance:
    """One scored utterance as the evaluator keeps it in a call's history (evidence, sentiment)."""

    utterance_id: str
    text: str
    sentiment: float
    confidence: float
    at_ms: int
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
    # the scoring worker's running state from the latest score: keyword and repeat counts are
    # read from it, never counted here (one owner: analytics)
    state: CallState = field(default_factory=CallState)
    behind: bool = False  # the latest analysis was over the worker's backlog bound behind
    # per stream SID: audio end (ms from stream start) of the latest score evaluated
    heard_until_ms: dict[str, int] = field(default_factory=dict)
    digits: list[str] = field(default_factory=list)
    escalation: Decision | None = None
    owned: bool = False  # fed by this instance's consumer group
    # audio time: offsets (ms from stream start) of the call's audio analysed / last speech end
    audio_ms: int = 0
    last_speech_end_ms: int | None = None
    # taken over mid-call (rebalance): earlier speech is unknown here, so silence counts from
    # the first audio offset this instance analyses (late by at most one period, never early)
    restart_silence: bool = False
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

    # --- rules ----------------------------------------------------------------------------------

    @property
    def rules(self) -> RulesFile:
        return self._rules

    def set_rules(self, rules: RulesFile) -> None:
        """Swap the rules file (reload) keeping every call's state."""
        self._rules = rules
        self._resolved.clear()

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

    @staticmethod
    def _replayed(record: CallRecord, score: Score) -> bool:
        """Already evaluated: the same utterance id (a score sent twice, or decided before a
        restart), or audio of this stream already heard (an utterance re-cut by a restarted
        worker starts inside it). Scores of one call arrive in audio order (one partition)."""
        if score.utterance_id in record.decided:
            return True
        heard = record.heard_until_ms.get(score.stream_sid)
        return heard is not None and score.start_ms < heard

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
        if self._replayed(record, score):
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
                categories,
            )
        )
        record.behind = score.behind
        untranscribed = record.state.untranscribed_utterances
        state = record.state = score.state
        if untranscribed > state.untranscribed_utterances:
            # a gap passed on after the batch's scores: the score's state may not count it yet
            update = {"untranscribed_utterances": untranscribed}
            state = record.state = state.model_copy(update=update)
        heard = record.heard_until_ms
        heard[score.stream_sid] = max(heard.get(score.stream_sid, 0), score.end_ms)
        if state.last_dtmf and (not record.digits or record.digits[-1] != state.last_dtmf):
            record.digits.append(state.last_dtmf)
        if record.started_at_ms is None and state.started_at_ms:
            record.started_at_ms = state.started_at_ms
        record.last_speech_at_ms = max(record.last_speech_at_ms or 0, at_ms)
        record.decided.append(score.utterance_id)
        self._heard(record, score.end_ms, speech=True)
        if self._max_score_age_ms is not None and now - score.scored_at_ms > self._max_score_age_ms:
            return None  # a replay of old history: remember it, decide nothing
        return self._evaluate(record, score=score, kinds=None)

    def on_progress(self, score: Score) -> Decision | None:
        """A watermark (marker score): the call's audio is analysed up to ``score.end_ms``.

        Evaluates the audio-time rules (``silence``, ``max_duration``) at that offset. A ``gap``
        (an utterance heard but not transcribed) is speech for the silence rule, and is counted:
        decisions made from here on say ``complete: false``, as do those made from analysis
        over the worker's backlog bound (``Score.behind``).
        """
        record = self._record(score.call_sid, score.tenant, score.campaign, score.stream_sid)
        record.owned = True
        self._heard(record, score.end_ms, speech=score.marker == "gap")
        record.behind = score.behind
        untranscribed = score.state.untranscribed_utterances
        if untranscribed > record.state.untranscribed_utterances:  # a gap marker counted it
            update = {"untranscribed_utterances": untranscribed}
            record.state = record.state.model_copy(update=update)
        if record.escalation is not None or not record.live:
            return None
        age_ms = self._now_ms() - score.scored_at_ms
        if self._max_score_age_ms is not None and age_ms > self._max_score_age_ms:
            return None  # a replay of old history
        return self._evaluate(record, score=None, kinds=("silence", "max_duration"))

    @staticmethod
    def _heard(record: CallRecord, end_ms: int, *, speech: bool) -> None:
        record.audio_ms = max(record.audio_ms, end_ms)
        if record.restart_silence:
            record.restart_silence = False
            record.last_speech_end_ms = max(record.last_speech_end_ms or 0, end_ms)
        if speech:
            record.last_speech_end_ms = max(record.last_speech_end_ms or 0, end_ms)

    def tick(self, limit: int | None = None) -> list[Decision]:
        """Nothing is decided on wall-clock time any more (see :meth:`on_progress`)."""
        return []

    def due_now(self) -> bool:
        return False

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
            # audio time: what was analysed since the caller's last words (or the stream start)
            quiet_s = (record.audio_ms - (record.last_speech_end_ms or 0)) / 1000
            if record.live and quiet_s >= rule.seconds:
                return Match(rule, _label(rule, f"caller silent for {quiet_s:.0f} s"))
            return None
        if isinstance(rule, RepetitionRule):
            return self._repetition(rule, record)
        if isinstance(rule, MaxDurationRule):
            elapsed_s = record.audio_ms / 1000  # audio analysed since the stream started
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
            and len(record.state.sentiment_last_n) > len(values)
        ):
            values = record.state.sentiment_last_n[-rule.last_n :]
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
        hits = sum(record.state.keyword_hits.get(c, 0) for c in rule.categories)
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
        # counted by the scoring worker at this rule's similarity (CallState.repeat_counts)
        run = record.state.repeat_counts.get(rule.id, 0)
        if run < rule.count:
            return None
        history = list(record.history)
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
            # made on part of the call: from analysis over the ASR backlog bound behind it, or
            # with some of its speech not transcribed
            complete=not record.behind and record.state.untranscribed_utterances == 0,
        )
