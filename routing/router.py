"""The routing core: evaluator + call book + rules + a publisher for what must be published.

Kafka loops and HTTP handlers both call into one :class:`Router`; it has no Kafka or HTTP code
itself. ``publisher`` is anything with ``publish_decision`` / ``publish_call_event`` (fire and
forget: :class:`~routing.publisher.DecisionPublisher` queues each record and a background task
sends them one at a time, in order; tests use a :class:`ListPublisher`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from routing.evaluator import Evaluator
from routing.metrics import RoutingMetrics
from routing.state import CallBook, CallView
from schemas.records import CallEvent, Decision, Score, Transcript
from schemas.rules import RulesFile

logger = logging.getLogger(__name__)


def _complete(view: CallView) -> bool:
    """An escalation is final; otherwise the answer is complete when nothing is pending."""
    return view.escalation is not None or not view.pending


class Publisher(Protocol):
    """Where the router's decisions and callback records go (fire and forget)."""

    def publish_decision(self, decision: Decision) -> None: ...

    def publish_call_event(self, event: CallEvent) -> None: ...


class ListPublisher:
    """Keeps what would be published (tests, dry runs)."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self.call_events: list[CallEvent] = []

    def publish_decision(self, decision: Decision) -> None:
        self.decisions.append(decision)

    def publish_call_event(self, event: CallEvent) -> None:
        self.call_events.append(event)


@dataclass(frozen=True)
class PassthruResult:
    """The answer to one Passthru callback."""

    status: int
    outcome: str  # "escalate" | "continue" | "unknown"
    view: CallView | None
    waited_ms: float = 0.0
    complete: bool = True  # every utterance heard before the answer had been decided


class Router:
    """Decides and answers for the calls of one routing instance (see module docstring)."""

    def __init__(
        self,
        rules: RulesFile,
        publisher: Publisher,
        *,
        clock: Callable[[], float] = time.time,
        grace_ms: int = 300,
        publish_continue: bool = True,
        max_score_age_s: float | None = 600.0,
        metrics: RoutingMetrics | None = None,
        record_callbacks: bool = True,
    ) -> None:
        self.rules = rules
        self.publisher = publisher
        self.clock = clock
        self.grace_ms = grace_ms
        self.publish_continue = publish_continue
        self.record_callbacks = record_callbacks
        self.metrics = metrics or RoutingMetrics()
        self.evaluator = Evaluator(rules, clock=clock, max_score_age_s=max_score_age_s)
        self.book = CallBook(clock=clock, on_change=self._wake)
        self.ready = False
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._unknown_logged_at = 0.0
        self._unknown_since_log = 0

    # --- rules ----------------------------------------------------------------------------------

    def set_rules(self, rules: RulesFile) -> None:
        self.rules = rules
        self.evaluator.set_rules(rules)

    # --- inputs from Kafka ----------------------------------------------------------------------

    def on_decision_record(self, decision: Decision) -> None:
        """A decision read back from ``agentstream.decisions`` (ours or another instance's)."""
        self.evaluator.note_decision(decision)
        self.book.apply_decision(decision)

    def on_observed_call_event(self, event: CallEvent) -> None:
        self.book.apply_call_event(event)

    def on_transcript(self, transcript: Transcript) -> None:
        self.book.apply_transcript(transcript)

    def on_score(self, score: Score) -> Decision | None:
        decision = self.evaluator.on_score(score)
        if decision is not None:
            self._publish(decision)
        return decision

    def on_progress(self, score: Score) -> Decision | None:
        """A watermark (marker score): audio-time rules at the call's analysed offset."""
        decision = self.evaluator.on_progress(score)
        if decision is not None:
            self._publish(decision)
        return decision

    def on_call_event(self, event: CallEvent) -> Decision | None:
        """A call event for the evaluator (this instance owns the call's partition)."""
        decision = self.evaluator.on_call_event(event)
        if decision is not None:
            self._publish(decision)
        return decision

    def tick(self, limit: int | None = None) -> list[Decision]:
        decisions = self.evaluator.tick(limit)
        for decision in decisions:
            self._publish(decision)
        return decisions

    def evict(self, idle_s: float) -> int:
        count = self.evaluator.evict(idle_s) + self.book.evict(idle_s)
        self.metrics.calls_tracked.set(len(self.book.calls))
        return count

    def _publish(self, decision: Decision) -> None:
        if decision.decision == "continue" and not self.publish_continue:
            self.book.apply_decision(decision)
            return
        now_ms = self.clock() * 1000
        if decision.utterance_id:
            self.metrics.score_to_decision_seconds.observe(decision.latency_ms / 1000)
            if decision.speech_end_at_ms:
                self.metrics.speech_to_decision_seconds.observe(
                    max(0.0, now_ms - decision.speech_end_at_ms) / 1000
                )
        self.metrics.decisions.labels(decision.decision, decision.rule_id or "").inc()
        if decision.decision == "escalate":
            logger.info(
                "escalate %s rule=%s target=%s: %s",
                decision.call_sid,
                decision.rule_id,
                decision.target_group,
                decision.reason,
            )
        # Apply locally at once: Passthru must not wait for the round trip through Kafka.
        self.book.apply_decision(decision)
        self.publisher.publish_decision(decision)

    # --- Passthru -------------------------------------------------------------------------------

    def _wake(self, call_sid: str) -> None:
        for event in self._waiters.get(call_sid, ()):
            event.set()

    def _status(self, escalated: bool) -> int:
        mapping = self.rules.passthru
        return mapping.escalate_status if escalated else mapping.continue_status

    def _grace_deadline_ms(self, view: CallView) -> float | None:
        """When to stop waiting for a pending utterance, or None if no wait is due."""
        if self.grace_ms <= 0 or view.escalation is not None or not view.pending:
            return None
        now = self.clock() * 1000
        if view.stopped_at_ms is None:
            return now + self.grace_ms
        deadline = view.stopped_at_ms + self.grace_ms
        return deadline if deadline > now else None

    async def passthru(self, call_sid: str, digits: str | None = None) -> PassthruResult:
        """The answer for one Passthru callback (the first answer for a call is repeated)."""
        view = self.book.get(call_sid)
        if view is not None and view.answer is not None:
            escalated = view.answer == self.rules.passthru.escalate_status
            outcome = "escalate" if escalated else "continue"
            return PassthruResult(view.answer, outcome, view, complete=_complete(view))
        if digits:
            tenant = view.tenant if view else "default"
            campaign = view.campaign if view else "default"
            if view is not None or self.evaluator.resolve(tenant, campaign).rules:
                known = call_sid in self.evaluator.calls
                decision = self.evaluator.on_digits(call_sid, digits, tenant, campaign)
                if decision is not None:
                    self._publish(decision)
                elif not known and view is None:
                    # Digits of a call never heard of are judged alone: a flood of unknown
                    # CallSids leaves no state behind.
                    self.evaluator.calls.pop(call_sid, None)
                view = self.book.get(call_sid)
        if view is None:
            status: int = self.rules.passthru.unknown_status or self.rules.passthru.continue_status
            self._log_unknown(call_sid, status)
            return PassthruResult(status, "unknown", None)
        waited = 0.0
        deadline = self._grace_deadline_ms(view)
        if deadline is not None:
            waited = await self._wait_pending(view, deadline)
        escalated = view.escalation is not None
        status = self.book.remember_answer(call_sid, self._status(escalated))
        outcome = "escalate" if escalated else "continue"
        return PassthruResult(status, outcome, view, waited, complete=_complete(view))

    def _log_unknown(self, call_sid: str, status: int) -> None:
        """Warn about unknown calls, at most once a second (a flood must not flood the log)."""
        self._unknown_since_log += 1
        now = time.monotonic()
        if now - self._unknown_logged_at >= 1.0:
            logger.warning(
                "passthru for unknown CallSid %s: default answer %d (%d unknown since last log)",
                call_sid,
                status,
                self._unknown_since_log,
            )
            self._unknown_logged_at = now
            self._unknown_since_log = 0

    async def _wait_pending(self, view: CallView, deadline_ms: float) -> float:
        started = self.clock()
        event = asyncio.Event()
        waiters = self._waiters.setdefault(view.call_sid, set())
        waiters.add(event)
        try:
            while view.pending and view.escalation is None:
                remaining = deadline_ms / 1000 - self.clock()
                if remaining <= 0:
                    break
                event.clear()
                try:
                    await asyncio.wait_for(event.wait(), timeout=remaining)
                except TimeoutError:
                    break
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(view.call_sid, None)
        outcome = "resolved" if not view.pending or view.escalation else "timeout"
        self.metrics.grace_waits.labels(outcome).inc()
        return (self.clock() - started) * 1000
