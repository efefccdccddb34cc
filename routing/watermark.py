"""Per-call completion watermarks, and the bounded wait Passthru makes for them.

The pipeline says how far each call is analysed: the ASR stage publishes watermark transcripts
(``progress``: audio transcribed up to an offset; ``end``: the call stopped and its last
utterance, flushed at ``stop``, is out), scoring passes them on as marker scores behind the
call's utterances, and the routing instance that owns the call evaluates everything before a
marker, then records it here and publishes it on ``agentstream.calls`` (kind ``analysed``) so
every other instance records it too.

Passthru asks :meth:`Watermarks.wait` before answering:

* a stopped call (or one whose stop routing has not read yet): until its ``end`` watermark;
* a call still streaming (a Stream applet running in the background): until the audio ingest
  received up to ``slack_ms`` before the request is analysed (the pipeline publishes progress
  about once a second of audio, so the slack is one such step);
* an escalated call: no wait (at most one escalation per call: the answer cannot change);

each at most ``bound_s`` (``AGENTSTREAM_ROUTING_PASSTHRU_COMPLETE_WAIT_MS``, default 1.5 s).
The answer then says ``complete`` and ``waited_ms``; ``incomplete`` answers are counted. A call
with an utterance heard but not transcribed (a ``gap`` marker: the worker was over its backlog
bound) is never complete, however far it is analysed, unless it escalated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from routing.state import CallBook
from schemas.records import CallEvent, Score


@dataclass
class CallProgress:
    """How far one call is analysed (owned by every routing instance: each keeps its own)."""

    audio_ms: int = 0
    received_at_ms: int = 0  # ingest's wall clock for the last analysed frame
    complete: bool = False
    untranscribed: int = 0  # utterances heard but not transcribed (gap markers)
    seen_at: float = 0.0
    waiters: set[asyncio.Event] = field(default_factory=set)


@dataclass(frozen=True)
class WaitResult:
    complete: bool
    waited_ms: float


class Watermarks:
    """Every call's :class:`CallProgress` plus the Passthru wait on it (see module docstring)."""

    def __init__(
        self,
        *,
        bound_s: float = 1.5,
        slack_ms: int = 1000,
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.bound_s = bound_s
        self.slack_ms = slack_ms
        self.clock = clock
        self.calls: dict[str, CallProgress] = {}
        self.answers = Counter(
            "agentstream_routing_passthru_analysis_total",
            "Passthru answers by whether the call's analysis was complete",
            ["complete"],
            registry=registry,
        )

    def _progress(self, call_sid: str) -> CallProgress:
        progress = self.calls.get(call_sid)
        if progress is None:
            progress = self.calls[call_sid] = CallProgress()
        progress.seen_at = self.clock()
        return progress

    def advance(
        self,
        call_sid: str,
        audio_ms: int,
        received_at_ms: int,
        complete: bool = False,
        untranscribed: int = 0,
    ) -> None:
        """Everything heard up to ``audio_ms`` (received by ingest by ``received_at_ms``) is
        evaluated; ``complete``: that was the call's last audio; ``untranscribed``: utterances
        of the call so far not transcribed."""
        progress = self._progress(call_sid)
        progress.audio_ms = max(progress.audio_ms, audio_ms)
        progress.received_at_ms = max(progress.received_at_ms, received_at_ms)
        progress.complete = progress.complete or complete
        progress.untranscribed = max(progress.untranscribed, untranscribed)
        self.poke(call_sid)

    def on_marker(self, score: Score) -> CallEvent:
        """Record a marker score the owner just evaluated; the ``analysed`` event to publish."""
        complete = score.marker == "end"
        untranscribed = score.state.untranscribed_utterances
        self.advance(score.call_sid, score.end_ms, score.speech_end_at_ms, complete, untranscribed)
        return CallEvent(
            kind="analysed",
            call_sid=score.call_sid,
            stream_sid=score.stream_sid,
            tenant=score.tenant,
            campaign=score.campaign,
            occurred_at_ms=int(self.clock() * 1000),
            complete=complete,
            audio_ms=score.end_ms,
            audio_received_at_ms=score.speech_end_at_ms,
            untranscribed_utterances=untranscribed or None,
        )

    def on_event(self, event: CallEvent) -> None:
        """An ``analysed`` event another instance published."""
        self.advance(
            event.call_sid,
            event.audio_ms or 0,
            event.audio_received_at_ms or 0,
            bool(event.complete),
            event.untranscribed_utterances or 0,
        )

    def poke(self, call_sid: str) -> None:
        """Wake the call's waiters (new progress, a decision, a stop)."""
        progress = self.calls.get(call_sid)
        if progress is not None:
            for event in progress.waiters:
                event.set()

    def satisfied(self, call_sid: str, stopped: bool, request_at_ms: int) -> bool:
        progress = self.calls.get(call_sid)
        if progress is None:
            return False
        if progress.complete:
            return True
        return not stopped and progress.received_at_ms >= request_at_ms - self.slack_ms

    def answer_complete(self, call_sid: str, stopped: bool, request_at_ms: int) -> bool:
        """Whether a Passthru answer now sees the call's whole analysis: :meth:`satisfied`, and
        none of the call's speech left untranscribed."""
        progress = self.calls.get(call_sid)
        untranscribed = progress is not None and progress.untranscribed > 0
        return not untranscribed and self.satisfied(call_sid, stopped, request_at_ms)

    async def wait(
        self,
        call_sid: str,
        *,
        stopped: Callable[[], bool],
        decided: Callable[[], bool],
        request_at_ms: int | None = None,
    ) -> WaitResult:
        """Wait (at most ``bound_s``) until the call is analysed as far as Passthru needs."""
        started = self.clock()
        request_ms = int(started * 1000) if request_at_ms is None else request_at_ms
        progress = self._progress(call_sid)
        event = asyncio.Event()
        progress.waiters.add(event)
        try:
            while not decided() and not self.satisfied(call_sid, stopped(), request_ms):
                remaining = started + self.bound_s - self.clock()
                if remaining <= 0:
                    break
                event.clear()
                try:
                    await asyncio.wait_for(event.wait(), timeout=remaining)
                except TimeoutError:
                    pass  # the loop re-checks the bound on the (injected) clock
        finally:
            progress.waiters.discard(event)
        complete = decided() or self.answer_complete(call_sid, stopped(), request_ms)
        self.answers.labels("true" if complete else "false").inc()
        return WaitResult(complete, (self.clock() - started) * 1000)

    def evict(self, idle_s: float) -> int:
        cutoff = self.clock() - idle_s
        stale = [sid for sid, p in self.calls.items() if p.seen_at < cutoff and not p.waiters]
        for sid in stale:
            del self.calls[sid]
        return len(stale)


# --- the HTTP side: routing.http calls these two ------------------------------------------------

WATERMARKS_KEY = web.AppKey("watermarks", Watermarks)


def wait_result_fields(wait: WaitResult) -> dict[str, Any]:
    return {"complete": wait.complete, "waited_ms": round(wait.waited_ms, 1)}


async def wait_for_analysis(app: web.Application, book: CallBook, call_sid: str) -> WaitResult:
    """Passthru's wait for the call's watermark (no wait for an unknown or answered call)."""
    marks = app.get(WATERMARKS_KEY)
    view = book.get(call_sid)
    if marks is None:
        return WaitResult(False, 0.0)

    def stopped() -> bool:
        current = book.get(call_sid)
        return current is not None and current.stopped_at_ms is not None

    def decided() -> bool:
        current = book.get(call_sid)
        return current is not None and current.escalation is not None

    if (view is None and call_sid not in marks.calls) or (view is not None and view.answer):
        now_ms = int(marks.clock() * 1000)
        complete = decided() or marks.answer_complete(call_sid, stopped(), now_ms)
        marks.answers.labels("true" if complete else "false").inc()
        return WaitResult(complete, 0.0)
    return await marks.wait(call_sid, stopped=stopped, decided=decided)
