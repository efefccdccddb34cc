"""End-to-end latency benchmark: N concurrent Exotel calls through the whole pipeline.

Starts the embedded broker (or uses --bootstrap) and a local stack (ingest, workers, routing,
each its own process, private topic namespace), then for each load level plays N concurrent
calls of the demo scenarios at real time with the simulator, and reads every transcript, score
and decision back from Kafka. Prints, per stage and end to end, p50/p95/p99 in ms:

  speech end -> final transcript   (Transcript.produced_at_ms - speech_end_at_ms)
  transcript -> score              (Score.latency_ms)
  score -> decision                (Decision.latency_ms)
  speech end -> decision           (Decision.decided_at_ms - speech_end_at_ms)

plus the Passthru answers (asked ``--passthru-delay-ms`` after each stop, 500 ms as Exotel
does): the share that saw the call's analysis complete and their ``waited_ms`` p50/p95; and
whether the level was "held" (every call played at real time, every Passthru answered as
the scenario expects, no call lost, speech end -> decision p95 under 1 s), and the CPU (% of one
core) and RSS of each process, read from /proc. ``--find-max`` raises N until a level is not
held. The stack is waited on until routing's ``/ready`` says the pipeline can decide (every
worker's models loaded and its partitions held): that time is reported as ``ready_s``.
Results go to bench/results/e2e-<time>.json.

    .venv/bin/python bench/e2e.py --calls 1 10
    .venv/bin/python bench/e2e.py --find-max --start 4 --step 4
    .venv/bin/python bench/e2e.py --calls 1 10 --channel telephone   # as the phone network delivers
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentstream.sim.calls import SimOptions, Simulator, load_scenarios, plan_calls  # noqa: E402
from agentstream.sim.results import (  # noqa: E402
    TopicWatcher,
    aggregate,
    summary_rows,
)
from agentstream.stack.broker import EmbeddedBroker  # noqa: E402
from agentstream.stack.local import LocalStack  # noqa: E402
from agentstream.stack.settings import worker_count  # noqa: E402
from agentstream.stack.topics import create_topics  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
HELD_P95_MS = 1000.0


def proc_sample(pid: int) -> tuple[float, int] | None:
    """(CPU seconds used so far, RSS bytes) of a process, from /proc (no psutil here)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/statm") as f:
            rss_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    return cpu, rss_pages * PAGE


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [float(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class ProcMonitor:
    """Samples CPU and RSS of named processes once a second in a thread."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.first: dict[str, tuple[float, float]] = {}
        self.last: dict[str, tuple[float, float]] = {}
        self.rss_max: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        now = time.monotonic()
        for name, pid in self.pids.items():
            got = proc_sample(pid)
            if got is None:
                continue
            cpu, rss = got
            self.first.setdefault(name, (now, cpu))
            self.last[name] = (now, cpu)
            self.rss_max[name] = max(self.rss_max.get(name, 0), rss)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> dict[str, dict[str, float]]:
        self._stop.set()
        self._thread.join()
        self._sample()
        out: dict[str, dict[str, float]] = {}
        for name in self.last:
            (t0, c0), (t1, c1) = self.first[name], self.last[name]
            out[name] = {
                "cpu_percent": round(100 * (c1 - c0) / max(1e-6, t1 - t0), 1),
                "cpu_s": round(c1 - c0, 2),
                "rss_max_mb": round(self.rss_max.get(name, 0) / 2**20, 1),
            }
        return out


async def run_level(
    n: int,
    stack: LocalStack,
    bootstrap: str,
    prefix: str,
    args: argparse.Namespace,
    pids: dict[str, int],
) -> dict[str, Any]:
    specs = load_scenarios(Path(args.scenarios))
    options = SimOptions(
        ingest_url=stack.ingest_url,
        routing_url=stack.routing_url,
        speed=1.0,
        rates=(8000,) if args.rate == 8000 else (8000, 16000),
        ramp_ms=args.spread_s * 1000 / max(1, n),
        passthru_delay_ms=args.passthru_delay_ms,
        wait_ready_s=180.0,
        channel=args.channel,
    )
    # Each of the n concurrent "lines" plays `rounds` calls back to back.
    runs = plan_calls(specs, n * args.rounds, options)
    watcher = TopicWatcher(bootstrap, prefix)
    watcher.watch(run.call_sid for run in runs)
    await watcher.start()
    monitor = ProcMonitor(pids)
    monitor.start()
    busy0, total0 = machine_cpu()
    started = time.monotonic()
    lateness: list[float] = []
    simulator = Simulator(runs, options)
    for run in runs:
        simulator.audio(run)
    options.concurrency = n
    await simulator.run()
    wall = time.monotonic() - started
    settled = await watcher.settle(args.settle)
    await watcher.stop()
    batches = worker_batches(stack)
    procs = monitor.stop()
    busy1, total1 = machine_cpu()
    ours = sum(p["cpu_s"] for p in procs.values())
    machine_busy_s = (busy1 - busy0) / CLK_TCK
    rows = summary_rows(runs, watcher)
    totals = aggregate(rows, watcher)
    audio_s = sum(r.audio_ms for r in runs) / 1000
    for run in runs:
        if run.started_at and run.ended_at:
            lateness.append((run.ended_at - run.started_at) * 1000 - run.audio_ms)
    lost = [r["call_sid"] for r in rows if r["utterances"] == 0 or r["decision"] is None]
    p95 = totals["latency_ms"].get("speech_end_to_decision", {}).get("p95")
    held = bool(
        totals["failed"] == 0
        and not lost
        and totals["matched"] == totals["checked"]
        and p95 is not None
        and p95 < HELD_P95_MS
        and max(lateness or [0]) < 1000
    )
    return {
        "concurrent_calls": n,
        "spread_s": args.spread_s,
        "rounds": args.rounds,
        "calls": len(runs),
        "audio_s": round(audio_s, 1),
        "wall_s": round(wall, 1),
        "settled": settled,
        "held": held,
        "lost_calls": lost,
        "passthru_matched": f"{totals['matched']}/{totals['checked']}",
        "max_stream_lateness_ms": round(max(lateness or [0]), 1),
        "latency_ms": totals["latency_ms"],
        "passthru_ms": totals["passthru_ms"],
        "passthru_complete": completeness(runs),
        "backlog": backlog_marks(watcher),
        "worker_batches": batches,
        "processes": procs,
        "machine": {
            "cpus": os.cpu_count(),
            "busy_percent": round(100 * (busy1 - busy0) / max(1.0, total1 - total0), 1),
            "busy_cpu_s": round(machine_busy_s, 1),
            "ours_cpu_s": round(ours, 1),
            "others_cpu_s": round(max(0.0, machine_busy_s - ours), 1),
            "loadavg_1m_end": loadavg(),
        },
        "per_call": [
            {
                k: r[k]
                for k in (
                    "call",
                    "call_sid",
                    "decision",
                    "rule_id",
                    "passthru_status",
                    "expected",
                    "ok",
                    "utterances",
                    "transcript",
                )
            }
            for r in rows
        ],
    }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def completeness(runs: list[Any]) -> dict[str, Any]:
    """Share of Passthru answers that saw the call's analysis complete; their waits."""
    answered = [r for r in runs if r.passthru_complete is not None]
    waits = [r.passthru_waited_ms for r in answered if r.passthru_waited_ms is not None]
    complete = sum(1 for r in answered if r.passthru_complete)
    return {
        "answers": len(answered),
        "complete": complete,
        "share": round(complete / len(answered), 3) if answered else None,
        "waited_ms_p50": _pct(waits, 0.50),
        "waited_ms_p95": _pct(waits, 0.95),
    }


def backlog_marks(watcher: TopicWatcher) -> dict[str, int]:
    """What the backlog bound marked: finals analysed over it, gaps, incomplete decisions."""
    outs = list(watcher.calls.values())
    finals = [t for o in outs for t in o.finals]
    decisions = [d for o in outs for d in o.decisions]
    return {
        "finals": len(finals),
        "finals_behind": sum(1 for t in finals if t.behind),
        "gaps": sum(len(o.gaps) for o in outs),
        "decisions": len(decisions),
        "decisions_incomplete": sum(1 for d in decisions if not d.complete),
    }


def worker_batches(stack: LocalStack) -> dict[str, float]:
    """Each worker's mean decode and VAD batch since it started, from its /metrics."""
    out: dict[str, float] = {}
    for service in stack.workers_running():
        found = re.search(r"metrics on (http://\S+/metrics)", service.log())
        if found is None:
            continue
        try:
            with urllib.request.urlopen(found.group(1), timeout=5) as response:
                text = response.read().decode()
        except OSError:
            continue
        values = {
            line.split()[0]: float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("agentstream_worker_") and " " in line
        }
        out[f"{service.name} decode"] = _ratio(values, "decoded_utterances", "decode_batches")
        out[f"{service.name} VAD"] = _ratio(values, "vad_frames", "vad_batches")
    return out


def _ratio(values: dict[str, float], num: str, den: str) -> float:
    d = values.get(f"agentstream_worker_{den}_total", 0.0)
    return round(values.get(f"agentstream_worker_{num}_total", 0.0) / d, 2) if d else 0.0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:7.0f}"


def print_level(result: dict[str, Any]) -> None:
    print(
        f"\n== {result['concurrent_calls']} concurrent calls ({result['calls']} calls, "
        f"{result['audio_s']} s audio, {result['wall_s']} s wall): "
        f"{'HELD' if result['held'] else 'NOT held'}; passthru as expected "
        f"{result['passthru_matched']}; lost {len(result['lost_calls'])}"
    )
    print(f"{'stage':<28}{'n':>6}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}  (ms)")
    for stage, p in result["latency_ms"].items():
        print(
            f"{stage:<28}{int(p['n'] or 0):>6}{_fmt(p['p50'])}{_fmt(p['p95'])}"
            f"{_fmt(p['p99'])}{_fmt(p['max'])}"
        )
    pt = result["passthru_ms"]
    print(
        f"{'passthru HTTP':<28}{int(pt['n'] or 0):>6}{_fmt(pt['p50'])}{_fmt(pt['p95'])}"
        f"{_fmt(pt['p99'])}{_fmt(pt['max'])}"
    )
    c = result["passthru_complete"]
    print(
        f"passthru complete: {c['complete']}/{c['answers']} (share {c['share']}); "
        f"waited_ms p50 {c['waited_ms_p50']} p95 {c['waited_ms_p95']}"
    )
    b = result["backlog"]
    print(
        f"backlog bound: finals over it {b['finals_behind']}/{b['finals']}, gaps {b['gaps']}, "
        f"decisions incomplete {b['decisions_incomplete']}/{b['decisions']}"
    )
    if result["worker_batches"]:
        means = ", ".join(f"{k} {v}" for k, v in result["worker_batches"].items())
        print(f"mean batch since start: {means}")
    m = result["machine"]
    print(
        f"machine: {m['busy_percent']}% busy of {m['cpus']} CPUs; CPU s ours {m['ours_cpu_s']}, "
        f"other programs {m['others_cpu_s']}; load {m['loadavg_1m_end']}"
    )
    print(f"{'process':<14}{'CPU %':>8}{'CPU s':>8}{'RSS MB':>9}")
    for name, p in result["processes"].items():
        print(f"{name:<14}{p['cpu_percent']:>8}{p['cpu_s']:>8}{p['rss_max_mb']:>9}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="*", default=[1, 10], help="load levels")
    parser.add_argument("--find-max", action="store_true", help="raise N until not held")
    parser.add_argument("--start", type=int, default=4)
    parser.add_argument("--step", type=int, default=4)
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1, help="calls per concurrent line")
    parser.add_argument(
        "--workers",
        default="auto",
        help="worker processes: a number, or auto (as `agentstream up`: one per 2 cores)",
    )
    parser.add_argument(
        "--rate",
        type=int,
        choices=(8000, 0),
        default=8000,
        help="8000 = telephone audio only; 0 = rotate 8/16 kHz",
    )
    parser.add_argument(
        "--spread-s",
        type=float,
        default=5.0,
        help="start the N calls evenly over this many seconds (0 = all at once, the worst "
        "case: the demo calls' utterances then end together)",
    )
    parser.add_argument(
        "--channel",
        choices=("none", "plain", "band", "mulaw", "telephone"),
        default="none",
        help="play the calls through this channel (telephone: 8 kHz, 300-3400 Hz, mu-law)",
    )
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument(
        "--passthru-delay-ms", type=float, default=500.0, help="Passthru this long after stop"
    )
    parser.add_argument("--no-warmup", action="store_true", help="measure the fresh stack")
    parser.add_argument("--scenarios", default=str(ROOT / "demo" / "scenarios.yaml"))
    parser.add_argument("--bootstrap", help="use this Kafka instead of the embedded broker")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    workers = worker_count("auto" if args.workers == "auto" else int(args.workers))

    prefix = f"bench{uuid.uuid4().hex[:6]}."
    broker: EmbeddedBroker | None = None
    if args.bootstrap:
        bootstrap = args.bootstrap
    else:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    results: list[dict[str, Any]] = []
    ready_s: float | None = None
    try:
        create_topics(bootstrap, prefix)
        began = time.monotonic()
        with LocalStack(bootstrap, prefix, workers=workers, start_timeout_s=180) as stack:
            ready_s = round(time.monotonic() - began, 1)
            pids = stack.pids()
            proc = getattr(broker, "_proc", None)
            if proc is not None:
                pids["broker"] = proc.pid
            pids["simulator"] = os.getpid()
            print(
                f"stack ready in {ready_s} s (pipeline can decide): {stack.ingest_url} "
                f"{stack.routing_url} logs {stack.log_dir}"
            )
            if not args.no_warmup:  # model caches, JIT paths, consumer fetch sessions
                asyncio.run(run_level(1, stack, bootstrap, prefix, args, pids))
            levels = list(args.calls) if not args.find_max else []
            if args.find_max:
                n = args.start
                while n <= args.limit:
                    result = asyncio.run(run_level(n, stack, bootstrap, prefix, args, pids))
                    results.append(result)
                    print_level(result)
                    if not result["held"]:
                        break
                    n += args.step
            for n in levels:
                result = asyncio.run(run_level(n, stack, bootstrap, prefix, args, pids))
                results.append(result)
                print_level(result)
    finally:
        if broker is not None:
            broker.stop()
    held = [r["concurrent_calls"] for r in results if r["held"]]
    print(
        f"\nmost concurrent calls held (decision p95 < {HELD_P95_MS:.0f} ms): "
        f"{max(held) if held else 0}"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"e2e-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {
                "bench": "e2e",
                "workers": workers,
                "ready_s": ready_s,
                "cpu_count": os.cpu_count(),
                "levels": results,
                "max_held": max(held) if held else 0,
            },
            indent=2,
        )
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
