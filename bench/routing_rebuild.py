"""Routing restart with a large history: rebuild time and RSS with 100,000 decisions retained.

What it does:
1. starts the embedded broker (or uses ``--bootstrap``) and creates topics under a fresh prefix;
2. writes ``--decisions`` decisions (one call each, ``--escalate-share`` escalations) to
   ``agentstream.decisions``: ``--old-share`` of them stamped ``--old-hours`` ago (outside the
   default 6 h rebuild window), the rest now, plus a start and a stop event per recent call;
3. starts ``agentstream routing`` as a separate process and times it to ``/ready``; reads its
   RSS (VmRSS, VmHWM) from /proc once ready and the rebuild line of its log.

Run it twice to compare: ``--old-share 0`` (every decision in the window: the worst case) and
the default ``--old-share 0.9`` (a 30-day history where 10 % of the calls are recent).
Writes JSON to ``bench/results/routing_rebuild.json``.
Usage: ``.venv/bin/python bench/routing_rebuild.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentstream.stack.broker import EmbeddedBroker, free_port  # noqa: E402
from agentstream.stack.topics import create_topics  # noqa: E402
from schemas.records import CallEvent, Decision  # noqa: E402
from schemas.topics import CALLS, DECISIONS, prefixed  # noqa: E402


def _decision(call_sid: str, at_ms: int, escalate: bool) -> Decision:
    return Decision(
        call_sid=call_sid,
        stream_sid=f"ST-{call_sid}",
        tenant="shopnow",
        campaign="deflection",
        decision="escalate" if escalate else "continue",
        rule_id="angry" if escalate else None,
        reason="bench" if escalate else "no rule matched",
        target_group="support" if escalate else None,
        utterance_id=f"{call_sid}-0",
        decided_at_ms=at_ms,
        latency_ms=3.0,
    )


async def _load(bootstrap: str, prefix: str, args: argparse.Namespace) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    now = int(time.time() * 1000)
    old_ms = now - int(args.old_hours * 3_600_000)
    old = int(args.decisions * args.old_share)
    try:
        for n in range(args.decisions):
            sid = f"CA-bench-{n}"
            at = old_ms if n < old else now
            escalate = n % int(1 / args.escalate_share) == 0
            key = sid.encode()
            await producer.send(
                prefixed(DECISIONS, prefix),
                _decision(sid, at, escalate).to_bytes(),
                key=key,
                timestamp_ms=at,
            )
            if n >= old:
                for kind in ("start", "stop"):
                    event = CallEvent(kind=kind, call_sid=sid, occurred_at_ms=at)  # type: ignore[arg-type]
                    await producer.send(
                        prefixed(CALLS, prefix), event.to_bytes(), key=key, timestamp_ms=at
                    )
        await producer.flush()
    finally:
        await producer.stop()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - local http
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _proc_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024  # MiB
    return out


def run(bootstrap: str, args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"b{uuid.uuid4().hex[:8]}."
    create_topics(bootstrap, prefix)
    started = time.monotonic()
    asyncio.run(_load(bootstrap, prefix, args))
    load_s = time.monotonic() - started
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AGENTSTREAM_ROUTING_TOPIC_PREFIX": prefix,
        "AGENTSTREAM_ROUTING_HOST": "127.0.0.1",
        "AGENTSTREAM_ROUTING_PORT": str(port),
        "AGENTSTREAM_ROUTING_CONSUMER_GROUP": f"{prefix}bench",
        "AGENTSTREAM_ROUTING_REBUILD_WINDOW_H": str(args.window_h),
    }
    log = Path(tempfile.mkstemp(prefix="routing-rebuild-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "agentstream.cli", "routing"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        t0 = time.monotonic()
        while not _ready(f"http://127.0.0.1:{port}/ready"):
            if proc.poll() is not None or time.monotonic() - t0 > args.timeout_s:
                raise SystemExit(f"routing not ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        ready_s = time.monotonic() - t0
        mem = _proc_status(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text(errors="replace")
    found = re.search(
        r"decision state rebuilt: (\d+) decisions, (\d+) escalated calls in ([\d.]+) s", text
    )
    return {
        "decisions_in_history": args.decisions,
        "old_share": args.old_share,
        "window_h": args.window_h,
        "load_s": round(load_s, 1),
        "process_start_to_ready_s": round(ready_s, 2),
        "rebuild_s": float(found.group(3)) if found else None,
        "decisions_rebuilt": int(found.group(1)) if found else None,
        "escalated_calls_held": int(found.group(2)) if found else None,
        "rss_mib": mem.get("VmRSS"),
        "peak_rss_mib": mem.get("VmHWM"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="use this Kafka instead of the embedded broker")
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--old-share", type=float, default=0.9)
    parser.add_argument("--old-hours", type=float, default=24 * 15)
    parser.add_argument("--escalate-share", type=float, default=0.1)
    parser.add_argument("--window-h", type=float, default=6.0)
    parser.add_argument("--timeout-s", type=float, default=600)
    args = parser.parse_args()
    if args.bootstrap:
        result = run(args.bootstrap, args)
    else:
        with EmbeddedBroker() as broker:
            result = run(broker.bootstrap, args)
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "routing_rebuild.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
