"""The supervisor dashboard's update cost with 200 active calls (server side and in the browser).

Traffic per call (a busy case): a partial transcript every ``--partial-ms`` while the caller
speaks, and every ``--utterance-ms`` a final transcript, its score and its decision; a tenth of
the calls escalate. The broadcaster sends one update every ``--interval-ms``.

1. Server: the board is fed that traffic for ``--seconds`` of (simulated) time; per update it
   reports the rows changed, the bytes sent to each page, and the CPU time to apply the records
   and to tick + drain + encode the update.
2. Browser (``--browser``, needs Chromium): the same traffic in real time, through the real
   aiohttp app and server-sent events, into the page in headless Chromium; reports the page's
   own render time per update (``window.agentstreamDashboard``) and updates received per second.

Usage: ``.venv/bin/python bench/dashboard.py [--calls 200] [--seconds 30] [--browser]``.
Writes ``bench/results/dashboard.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentstream.stack.broker import free_port  # noqa: E402
from routing.dashboard.board import Board  # noqa: E402
from routing.dashboard.http import Broadcaster, add_dashboard, sse_event  # noqa: E402
from schemas.records import (  # noqa: E402
    CallEvent,
    CallState,
    Decision,
    KeywordHit,
    Score,
    Sentiment,
    Transcript,
)
from schemas.rules import default_rules  # noqa: E402

WORDS = "I would like to know why my payment has not been credited to the account yet".split()


class Traffic:
    """Records for ``calls`` live calls, generated as time passes (deterministic)."""

    def __init__(self, calls: int, partial_ms: int, utterance_ms: int, t0_ms: int) -> None:
        self.calls = [f"CAbench{n:04d}" for n in range(calls)]
        self.partial_ms = partial_ms
        self.utterance_ms = utterance_ms
        self.t0_ms = t0_ms
        self.done_ms = t0_ms

    def starts(self) -> list[CallEvent]:
        return [
            CallEvent(
                kind="start",
                call_sid=sid,
                tenant=("acme-finance", "shopnow", "city-clinic")[n % 3],
                campaign=("collections", "deflection", "appointments")[n % 3],
                from_number=f"+9198{n:08d}",
                occurred_at_ms=self.t0_ms,
            )
            for n, sid in enumerate(self.calls)
        ]

    def until(self, now_ms: int) -> list[Transcript | Score | Decision]:
        """Every record due in (done_ms, now_ms]: calls are staggered across the period."""
        out: list[Transcript | Score | Decision] = []
        for n, sid in enumerate(self.calls):
            offset = (n * 997) % self.utterance_ms
            for at in range(self.done_ms + 1, now_ms + 1):
                phase = (at - self.t0_ms + offset) % self.utterance_ms
                if phase % self.partial_ms == 0 and phase != 0:
                    out.append(self._transcript(sid, at, final=False, words=phase // 200))
                elif phase == 0 and at > self.t0_ms:
                    index = (at - self.t0_ms + offset) // self.utterance_ms
                    out.extend(self._utterance(sid, n, index, at))
        self.done_ms = now_ms
        return out

    def _transcript(self, sid: str, at: int, *, final: bool, words: int, index: int = 0) -> Any:
        text = " ".join(WORDS[: max(1, min(len(WORDS), words))])
        return Transcript(
            call_sid=sid,
            utterance_id=f"{sid}-{index}",
            utterance_index=index,
            is_final=final,
            text=text,
            start_ms=at - self.t0_ms - 2000,
            end_ms=at - self.t0_ms,
            engine="bench",
            speech_end_at_ms=at,
            produced_at_ms=at,
            latency_ms=400.0,
        )

    def _utterance(self, sid: str, n: int, index: int, at: int) -> list[Any]:
        angry = n % 10 == 0
        value = -0.3 - 0.2 * index if angry else 0.4
        value = max(-1.0, value)
        final = self._transcript(sid, at, final=True, words=len(WORDS), index=index)
        hits = [KeywordHit(category="complaint", phrase="useless", matched="useless", span=(0, 7))]
        score = Score(
            call_sid=sid,
            utterance_id=final.utterance_id,
            utterance_index=index,
            text=final.text,
            start_ms=final.start_ms,
            end_ms=final.end_ms,
            sentiment=Sentiment(
                score=value, label="negative" if angry else "positive", confidence=0.9
            ),
            keywords=hits if angry else [],
            state=CallState(utterance_count=index + 1, sentiment_trend=-0.1 if angry else 0.0),
            speech_end_at_ms=at,
            scored_at_ms=at,
            latency_ms=5.0,
        )
        escalate = angry and index == 3
        decision = Decision(
            call_sid=sid,
            decision="escalate" if escalate else "continue",
            rule_id="angry-caller" if escalate else None,
            reason="rolling sentiment below -0.5" if escalate else "no rule matched",
            target_group="support" if escalate else None,
            utterance_id=final.utterance_id,
            decided_at_ms=at,
            latency_ms=2.0,
        )
        return [final, score, decision]


def apply(board: Board, record: Any) -> None:
    if isinstance(record, Transcript):
        board.apply_transcript(record)
    elif isinstance(record, Score):
        board.apply_score(record)
    elif isinstance(record, Decision):
        board.apply_decision(record)
    else:
        board.apply_call_event(record)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def server_bench(args: argparse.Namespace) -> dict[str, Any]:
    now = [1_800_000_000.0]
    board = Board(default_rules(), clock=lambda: now[0])
    t0 = int(now[0] * 1000)
    traffic = Traffic(args.calls, args.partial_ms, args.utterance_ms, t0)
    for event in traffic.starts():
        board.apply_call_event(event)
    board.drain()
    apply_ms: list[float] = []
    update_ms: list[float] = []
    rows: list[int] = []
    sizes: list[int] = []
    records = 0
    steps = int(args.seconds * 1000 / args.interval_ms)
    for step in range(1, steps + 1):
        now[0] = (t0 + step * args.interval_ms) / 1000
        batch = traffic.until(t0 + step * args.interval_ms)
        started = time.process_time()
        for record in batch:
            apply(board, record)
        apply_ms.append((time.process_time() - started) * 1000)
        records += len(batch)
        started = time.process_time()
        board.tick()
        update = board.drain()
        payload = b""
        if update is not None:
            payload = sse_event(
                "update",
                {
                    "version": update.version,
                    "now_ms": update.now_ms,
                    "rows": update.rows,
                    "touched": update.touched,
                    "removed": update.removed,
                },
            )
        update_ms.append((time.process_time() - started) * 1000)
        rows.append(len(update.rows) if update else 0)
        sizes.append(len(payload))
    snapshot = len(sse_event("snapshot", {"rows": board.rows()}))
    live = sum(1 for c in board.calls.values() if c.live)
    return {
        "calls": live,
        "records_per_s": round(records / args.seconds, 1),
        "updates_per_s": round(1000 / args.interval_ms, 1),
        "rows_per_update_mean": round(statistics.mean(rows), 1),
        "bytes_per_update_mean": int(statistics.mean(sizes)),
        "snapshot_bytes": snapshot,
        "apply_ms_per_update_mean": round(statistics.mean(apply_ms), 3),
        "apply_us_per_record": round(sum(apply_ms) * 1000 / max(1, records), 2),
        "drain_encode_ms_mean": round(statistics.mean(update_ms), 3),
        "drain_encode_ms_p99": round(pct(update_ms, 0.99), 3),
        "server_cpu_share": round((sum(apply_ms) + sum(update_ms)) / (args.seconds * 1000), 4),
    }


def browser_bench(args: argparse.Namespace) -> dict[str, Any]:
    from tests.browser import chromium, chromium_path  # a test helper, not shipped

    if chromium_path() is None:
        return {"skipped": "no chromium"}
    board = Board(default_rules())
    t0 = int(time.time() * 1000)
    traffic = Traffic(args.calls, args.partial_ms, args.utterance_ms, t0)
    for event in traffic.starts():
        board.apply_call_event(event)
    port = free_port("127.0.0.1")
    ready = threading.Event()
    stop = threading.Event()

    async def serve() -> None:
        app = web.Application()
        add_dashboard(app, Broadcaster(board, args.interval_ms / 1000))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        while not stop.is_set():
            for record in traffic.until(int(time.time() * 1000)):
                apply(board, record)
            await asyncio.sleep(0.05)
        await runner.cleanup()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        with chromium() as page:
            page.navigate(f"http://127.0.0.1:{port}/dashboard/")
            page.wait_for(f"document.querySelectorAll('#rows tr').length === {args.calls}", 30)
            page.evaluate(
                "Object.assign(window.agentstreamDashboard,"
                " {renders: 0, updates: 0, totalRenderMs: 0, maxRenderMs: 0})"
            )
            started = time.monotonic()
            time.sleep(args.browser_seconds)  # a measurement window, not a readiness wait
            stats = page.evaluate("JSON.stringify(window.agentstreamDashboard)")
            elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join(10)
    data = orjson.loads(stats)
    renders = max(1, int(data["renders"]))
    return {
        "calls": args.calls,
        "seconds": round(elapsed, 1),
        "updates_per_s": round(data["updates"] / elapsed, 1),
        "render_ms_mean": round(data["totalRenderMs"] / renders, 2),
        "render_ms_max": round(data["maxRenderMs"], 2),
        "page_busy_share": round(data["totalRenderMs"] / (elapsed * 1000), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval-ms", type=int, default=250)
    parser.add_argument("--partial-ms", type=int, default=1000)
    parser.add_argument("--utterance-ms", type=int, default=4000)
    parser.add_argument("--browser", action="store_true", help="also measure the page")
    parser.add_argument("--browser-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dashboard.json")
    args = parser.parse_args()
    result: dict[str, Any] = {"server": server_bench(args)}
    print("server:", orjson.dumps(result["server"], option=orjson.OPT_INDENT_2).decode())
    if args.browser:
        result["browser"] = browser_bench(args)
        print("browser:", orjson.dumps(result["browser"], option=orjson.OPT_INDENT_2).decode())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
