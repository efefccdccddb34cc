"""What Passthru and Connect answer from: each call's escalation, stop and pending utterances.

A plain in-memory book, fed by every instance's reader of ``agentstream.decisions`` (rebuilt
from the beginning at start), ``agentstream.calls`` and ``agentstream.transcripts``. Answers
come from here in microseconds; nothing on the request path waits for Kafka except the bounded
grace wait for an utterance still being scored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas.records import CallEvent, Decision, Transcript

PENDING_LIMIT = 32


@dataclass
class CallView:
    """What Passthru and Connect answer from for one call.

    Every routing instance keeps one per call it has heard of (its reader sees every partition).
    """

    call_sid: str
    tenant: str = "default"
    campaign: str = "default"
    stream_sid: str = ""
    escalation: Decision | None = None
    started_at_ms: int | None = None
    stopped_at_ms: int | None = None
    pending: set[str] = field(default_factory=set)
    decided: set[str] = field(default_factory=set)
    answer: int | None = None
    last_seen_ms: int = 0


class CallBook:
    """Every :class:`CallView` of one routing instance.

    ``on_change(call_sid)`` wakes the Passthru grace waiters of that call.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self._clock = clock
        self.on_change = on_change
        self.calls: dict[str, CallView] = {}

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def get(self, call_sid: str) -> CallView | None:
        return self.calls.get(call_sid)

    def _view(self, call_sid: str, tenant: str = "default", campaign: str = "default") -> CallView:
        view = self.calls.get(call_sid)
        if view is None:
            view = self.calls[call_sid] = CallView(call_sid, tenant, campaign)
        if tenant != "default":
            view.tenant = tenant
        if campaign != "default":
            view.campaign = campaign
        view.last_seen_ms = self._now_ms()
        return view

    def _changed(self, call_sid: str) -> None:
        if self.on_change is not None:
            self.on_change(call_sid)

    def apply_decision(self, decision: Decision) -> bool:
        """Record a decision; True when it is the call's first escalation."""
        view = self._view(decision.call_sid, decision.tenant, decision.campaign)
        view.stream_sid = decision.stream_sid or view.stream_sid
        first = False
        if decision.utterance_id:
            view.pending.discard(decision.utterance_id)
            if len(view.decided) < PENDING_LIMIT * 8:
                view.decided.add(decision.utterance_id)
        if decision.decision == "escalate" and view.escalation is None:
            view.escalation = decision
            first = True
        self._changed(decision.call_sid)
        return first

    def apply_call_event(self, event: CallEvent) -> None:
        view = self._view(event.call_sid, event.tenant, event.campaign)
        view.stream_sid = event.stream_sid or view.stream_sid
        if event.kind == "start":
            view.started_at_ms = event.occurred_at_ms
            view.stopped_at_ms = None
        elif event.kind == "stop":
            view.stopped_at_ms = event.occurred_at_ms
        elif event.kind == "passthru" and event.answer and event.answer.isdigit():
            # Another instance answered this call: give the same answer here.
            if view.answer is None:
                view.answer = int(event.answer)
        self._changed(event.call_sid)

    def apply_transcript(self, transcript: Transcript) -> None:
        """An utterance (partial or final) exists: it is pending until its decision arrives."""
        view = self._view(transcript.call_sid, transcript.tenant, transcript.campaign)
        uid = transcript.utterance_id
        if uid not in view.decided and len(view.pending) < PENDING_LIMIT:
            view.pending.add(uid)

    def remember_answer(self, call_sid: str, answer: int) -> int:
        """Pin the first answer given for a call; later callbacks repeat it."""
        view = self._view(call_sid)
        if view.answer is None:
            view.answer = answer
        return view.answer

    def evict(self, idle_s: float) -> int:
        cutoff = self._now_ms() - int(idle_s * 1000)
        stale = [sid for sid, view in self.calls.items() if view.last_seen_ms < cutoff]
        for sid in stale:
            del self.calls[sid]
        return len(stale)
