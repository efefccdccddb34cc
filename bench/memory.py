"""Does a process grow with the calls it has seen? RSS per process after every chunk of calls.

Starts the embedded broker and a local stack (ingest, workers, routing), then plays many short
calls (the first seconds of each demo call, speech included) in chunks, ``--concurrency`` at a
time and ``--speed`` times real time, with Passthru asked after each. After each chunk and a
settle, it prints the RSS of every process, read from /proc. A process whose RSS keeps rising
from chunk to chunk with the same number of live calls keeps per-call state it should drop.

    .venv/bin/python bench/memory.py                          # 6 chunks of 100 calls
    .venv/bin/python bench/memory.py --chunks 10 --chunk 200 --speed 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentstream.sim.calls import CallSpec, SimOptions, Simulator, plan_calls  # noqa: E402
from agentstream.stack.broker import EmbeddedBroker  # noqa: E402
from agentstream.stack.local import LocalStack  # noqa: E402
from agentstream.stack.settings import worker_count  # noqa: E402
from agentstream.stack.topics import create_topics  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def clips(seconds: float, out: Path) -> list[CallSpec]:
    """The first ``seconds`` of each demo call, as its own file."""
    specs = []
    for path in sorted((ROOT / "demo" / "calls").glob("*.wav")):
        with wave.open(str(path), "rb") as src:
            rate = src.getframerate()
            frames = src.readframes(int(rate * seconds))
            params = src.getparams()
        clip = out / path.name
        with wave.open(str(clip), "wb") as dst:
            dst.setparams(params)
            dst.writeframes(frames)
        specs.append(CallSpec(path.stem, clip, "acme-finance", "collections"))
    return specs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=6)
    parser.add_argument("--chunk", type=int, default=100, help="calls per chunk")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--speed", type=float, default=2.0, help="times real time")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each call")
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--workers", default="1", help="worker processes, or auto")
    args = parser.parse_args()
    workers = worker_count("auto" if args.workers == "auto" else int(args.workers))
    prefix = f"mem{uuid.uuid4().hex[:6]}."
    tmp = Path(tempfile.mkdtemp(prefix="agentstream-memory-"))
    specs = clips(args.seconds, tmp)
    broker = EmbeddedBroker().start()
    try:
        create_topics(broker.bootstrap, prefix)
        with LocalStack(broker.bootstrap, prefix, workers=workers, start_timeout_s=180) as stack:
            pids = stack.pids()
            proc = getattr(broker, "_proc", None)
            if proc is not None:
                pids["broker"] = proc.pid
            names = sorted(pids)
            print(
                f"{args.chunks} chunks of {args.chunk} calls of {args.seconds:g} s, "
                f"{args.concurrency} at a time, {args.speed:g}x real time; RSS in MB"
            )
            print(f"{'calls seen':>10} {'s':>6} " + " ".join(f"{n:>10}" for n in names))
            print(f"{0:>10} {0:>6} " + " ".join(f"{rss_mb(pids[n]):>10.1f}" for n in names))
            options = SimOptions(
                ingest_url=stack.ingest_url,
                routing_url=stack.routing_url,
                rates=(8000,),
                speed=args.speed,
                concurrency=args.concurrency,
                passthru_delay_ms=500,
                wait_ready_s=60,
            )
            seen = 0
            for _ in range(args.chunks):
                began = time.monotonic()
                runs = asyncio.run(Simulator(plan_calls(specs, args.chunk, options), options).run())
                seen += len(runs)
                took = time.monotonic() - began
                time.sleep(args.settle)
                print(
                    f"{seen:>10} {took:>6.0f} "
                    + " ".join(f"{rss_mb(pids[n]):>10.1f}" for n in names),
                    flush=True,
                )
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
