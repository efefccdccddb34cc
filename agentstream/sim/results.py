"""What the pipeline made of simulated calls: read back from Kafka, summarised, displayed.

:class:`TopicWatcher` follows ``agentstream.transcripts``, ``.scores`` and ``.decisions`` from
the beginning (a consumer without a group, so it never disturbs the services' offsets) and keeps
the records whose key is one of the simulator's call SIDs. :func:`summary_rows` joins them with
each call's own outcome; :func:`render_live` and :func:`render_summary` draw the rich tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from rich.table import Table

from agentstream.sim.calls import CallRun, describe
from schemas.records import Decision, Score, Transcript
from schemas.topics import DECISIONS, SCORES, TRANSCRIPTS, prefixed

logger = logging.getLogger(__name__)


@dataclass
class PipelineOutput:
    """Every transcript, score and decision the pipeline produced for one simulated call, in
    arrival order, as read back from the topics.

    Per-call state owned by the process that runs the simulator (``agentstream simulate``,
    ``bench/e2e.py`` or a test), filled in by its :class:`TopicWatcher`; the pipeline's own
    per-call state lives in ingest, the worker and routing.
    """

    transcripts: list[Transcript] = field(default_factory=list)
    scores: list[Score] = field(default_factory=list)
    analysed: bool = False  # the pipeline's end-of-call watermark came through
    gaps: list[Transcript] = field(default_factory=list)  # utterances heard, not transcribed
    decisions: list[Decision] = field(default_factory=list)
    last_seen: float = 0.0  # monotonic time of the latest record

    @property
    def finals(self) -> list[Transcript]:
        return [t for t in self.transcripts if t.is_final]

    @property
    def decision(self) -> Decision | None:
        """The escalation if there is one, else the latest decision."""
        for item in self.decisions:
            if item.decision == "escalate":
                return item
        return self.decisions[-1] if self.decisions else None

    def settled(self) -> bool:
        """Escalated, or every final transcript scored and a decision after the last score."""
        if any(d.decision == "escalate" for d in self.decisions):
            return True
        finals = self.finals
        return bool(finals) and len(self.scores) >= len(finals) and bool(self.decisions)


class TopicWatcher:
    """Collects the records of a set of call SIDs from the analytics topics into one
    :class:`PipelineOutput` per call (``calls``), in the process that runs the simulator."""

    def __init__(self, bootstrap: str, topic_prefix: str = "", fetch_max_wait_ms: int = 50) -> None:
        self.bootstrap = bootstrap
        self.topics: dict[str, type[Transcript] | type[Score] | type[Decision]] = {
            prefixed(TRANSCRIPTS, topic_prefix): Transcript,
            prefixed(SCORES, topic_prefix): Score,
            prefixed(DECISIONS, topic_prefix): Decision,
        }
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.calls: dict[str, PipelineOutput] = {}
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    def watch(self, call_sids: Iterable[str]) -> None:
        for sid in call_sids:
            self.calls.setdefault(sid, PipelineOutput())

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            client_id="agentstream-simulator",
        )
        try:
            await self._consumer.start()
        except KafkaError as exc:
            self.error = f"cannot read results from Kafka at {self.bootstrap}: {exc}"
            self._consumer = None
            return
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        assert self._consumer is not None
        keys = {sid.encode(): sid for sid in self.calls}
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, messages in batches.items():
                model = self.topics[tp.topic]
                for message in messages:
                    sid = keys.get(message.key or b"")
                    if sid is None:
                        continue
                    try:
                        record = model.model_validate(orjson.loads(message.value))
                    except ValueError as exc:
                        logger.warning("unreadable %s record for %s: %s", tp.topic, sid, exc)
                        continue
                    calls = self.calls[sid]
                    calls.last_seen = time.monotonic()
                    if isinstance(record, Transcript | Score) and record.marker is not None:
                        calls.analysed = calls.analysed or record.marker == "end"
                        if isinstance(record, Transcript) and record.marker == "gap":
                            calls.gaps.append(record)
                        continue  # a watermark, not an utterance
                    if isinstance(record, Transcript):
                        calls.transcripts.append(record)
                    elif isinstance(record, Score):
                        calls.scores.append(record)
                    elif isinstance(record, Decision):
                        calls.decisions.append(record)

    async def settle(
        self,
        timeout_s: float,
        call_sids: Iterable[str] | None = None,
        quiet_s: float = 1.5,
        interval_s: float = 0.1,
    ) -> bool:
        """Wait until every watched call (or those of ``call_sids``) has settled and has had no
        new record for ``quiet_s`` (the last utterance may still be in the recogniser when the
        previous one is already decided), at most ``timeout_s``; True if all did."""
        wanted = [self.calls[sid] for sid in (self.calls if call_sids is None else call_sids)]
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s

        def quiet(records: PipelineOutput) -> bool:
            return time.monotonic() - max(records.last_seen, started) >= quiet_s

        while loop.time() < deadline:
            if self._task is None or all(c.settled() and quiet(c) for c in wanted):
                return self._task is not None
            await asyncio.sleep(interval_s)
        return False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))  # nearest-rank percentile
    return ordered[min(len(ordered) - 1, max(0, rank - 1))]


def percentiles(values: list[float]) -> dict[str, float | None]:
    return {
        "n": float(len(values)),
        "p50": _pct(values, 50),
        "p95": _pct(values, 95),
        "p99": _pct(values, 99),
        "max": max(values) if values else None,
    }


def stage_latencies(records: PipelineOutput) -> dict[str, list[float]]:
    """Per-utterance latencies of one call, in ms, by stage."""
    finals = records.finals
    decided = {d.utterance_id: d for d in records.decisions if d.utterance_id}
    return {
        "speech_end_to_transcript": [float(t.produced_at_ms - t.speech_end_at_ms) for t in finals],
        "transcript_to_score": [s.latency_ms for s in records.scores],
        "score_to_decision": [d.latency_ms for d in records.decisions],
        "speech_end_to_decision": [
            float(d.decided_at_ms - d.speech_end_at_ms)
            for d in decided.values()
            if d.speech_end_at_ms
        ],
    }


def utterance_detail(records: PipelineOutput) -> list[dict[str, Any]]:
    """Per final utterance: text, times, sentiment, keyword categories, the decision it led to."""
    scores = {s.utterance_id: s for s in records.scores}
    decisions = {d.utterance_id: d for d in records.decisions if d.utterance_id}
    out: list[dict[str, Any]] = []
    for t in records.finals:
        score = scores.get(t.utterance_id)
        decision = decisions.get(t.utterance_id)
        out.append(
            {
                "utterance_id": t.utterance_id,
                "text": t.text,
                "start_ms": t.start_ms,
                "end_ms": t.end_ms,
                "sentiment": None if score is None else round(score.sentiment.score, 3),
                "keywords": [] if score is None else sorted({k.category for k in score.keywords}),
                "decision": None if decision is None else decision.decision,
                "rule_id": None if decision is None else decision.rule_id,
            }
        )
    return out


def summary_row(run: CallRun, records: PipelineOutput | None) -> dict[str, Any]:
    row = describe(run)
    records = records or PipelineOutput()
    decision = records.decision
    last_score = records.scores[-1] if records.scores else None
    row.update(
        {
            "transcript": " | ".join(t.text.strip() for t in records.finals),
            "utterances": len(records.finals),
            "sentiment": None
            if last_score is None
            else {
                "last": last_score.sentiment.score,
                "label": last_score.sentiment.label,
                "mean_last_n": last_score.state.sentiment_mean_last_n,
                "min": min(s.sentiment.score for s in records.scores),
            },
            "decision": None if decision is None else decision.decision,
            "rule_id": None if decision is None else decision.rule_id,
            "reason": None if decision is None else decision.reason,
            "target_group": None if decision is None else decision.target_group,
            "latency_ms": {k: percentiles(v) for k, v in stage_latencies(records).items()},
            "utterance_detail": utterance_detail(records),
        }
    )
    row["ok"] = check_row(row)
    return row


def check_row(row: dict[str, Any]) -> bool | None:
    """None when nothing was expected; else whether the Passthru answer matched."""
    expected = row.get("expected")
    if not expected:
        return None
    return bool(row.get("passthru_decision") == expected and not row.get("error"))


def summary_rows(runs: list[CallRun], watcher: TopicWatcher | None) -> list[dict[str, Any]]:
    calls = watcher.calls if watcher else {}
    return [summary_row(run, calls.get(run.call_sid)) for run in runs]


def _short(text: str | None, width: int) -> str:
    text = text or ""
    return text if len(text) <= width else text[: width - 1] + "…"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def render_live(runs: list[CallRun], watcher: TopicWatcher | None) -> Table:
    table = Table(title="agentstream simulate", expand=False)
    for name in ("call", "endpoint", "status", "progress", "last transcript", "decision"):
        table.add_column(name)
    calls = watcher.calls if watcher else {}
    for run in runs:
        records = calls.get(run.call_sid) or PipelineOutput()
        finals = records.finals
        decision = records.decision
        done = run.frames_sent * 100 // max(1, run.frames_total)
        table.add_row(
            run.spec.name,
            run.endpoint,
            run.status,
            f"{done}%",
            _short(finals[-1].text.strip() if finals else "", 48),
            "-" if decision is None else decision.decision,
        )
    return table


def render_summary(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="calls")
    table.add_column("call", no_wrap=True)
    table.add_column("transcript", ratio=1)
    for name in (
        "sentiment",
        "decision (rule)",
        "passthru",
        "expected",
        "speech end→text/decision",
    ):
        table.add_column(name, no_wrap=True)
    for row in rows:
        sentiment = row["sentiment"]
        latency = row["latency_ms"]
        ok = row["ok"]
        mark = "" if ok is None else (" [green]✓[/]" if ok else " [red]✗[/]")
        decision = row["decision"] or "-"
        if row["rule_id"]:
            decision += f" ({row['rule_id']})"
        table.add_row(
            row["call"],
            _short(row["transcript"], 90),
            "-" if sentiment is None else f"{sentiment['mean_last_n']:+.2f} {sentiment['label']}",
            decision,
            f"{row['passthru_status'] or '-'} {_ms(row['passthru_ms'])} ms",
            f"{row['expected'] or '-'}{mark}",
            f"{_ms(latency['speech_end_to_transcript']['p50'])} / "
            f"{_ms(latency['speech_end_to_decision']['p95'])} ms",
        )
    return table


def aggregate(rows: list[dict[str, Any]], watcher: TopicWatcher | None) -> dict[str, Any]:
    """Totals and latency percentiles across every call (for --json and the benchmark)."""
    stages: dict[str, list[float]] = {}
    for records in watcher.calls.values() if watcher else ():
        for stage, values in stage_latencies(records).items():
            stages.setdefault(stage, []).extend(values)
    checked = [r for r in rows if r["ok"] is not None]
    passthru = [r["passthru_ms"] for r in rows if r["passthru_ms"] is not None]
    return {
        "calls": len(rows),
        "failed": sum(1 for r in rows if r["error"]),
        "checked": len(checked),
        "matched": sum(1 for r in checked if r["ok"]),
        "decided": sum(1 for r in rows if r["decision"]),
        "passthru_ms": percentiles(passthru),
        "passthru_mean_ms": statistics.fmean(passthru) if passthru else None,
        "latency_ms": {stage: percentiles(values) for stage, values in stages.items()},
    }
