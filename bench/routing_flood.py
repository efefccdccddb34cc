"""Routing's memory under a hostile HTTP flood: RSS before, at peak and after 10,000 requests.

What it does (loopback only, bounded: one routing process, ``--requests`` requests at most
``--concurrency`` at a time):
1. starts the embedded broker (or uses ``--bootstrap``) and creates topics under a fresh prefix;
2. starts ``agentstream routing`` (the real command) from ``--server-root`` (default: this
   checkout; point it at another checkout to compare), with Basic auth unless ``--no-auth``;
3. fires the flood, a rotation of hostile requests: Passthru for unknown CallSids carrying
   4,000 digits each (with and without credentials), malformed ``Stream=`` JSON, 300
   parameters, 60 KB bodies, non-UTF-8 bodies, deeply nested JSON, ``DialCallDuration=inf``,
   status callbacks with ever-new ``Status`` values, wrong credentials;
4. samples the server's RSS (``/proc/PID/status`` VmRSS) every 50 ms, and counts answers by
   status code (a 5xx is a failure).

Prints and writes ``bench/results/routing_flood.json``. Usage:
``.venv/bin/python bench/routing_flood.py [--requests 10000] [--server-root /work/main]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentstream.stack.broker import EmbeddedBroker  # noqa: E402
from agentstream.stack.topics import create_topics  # noqa: E402

KEY, TOKEN = "exotel", "bench-token"
GOOD = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:{TOKEN}".encode()).decode()}
BAD = {"Authorization": "Basic " + base64.b64encode(b"exotel:wrong").decode()}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def hostile(n: int) -> tuple[str, str, dict[str, Any]]:
    """The n-th request of the flood: (method, path, aiohttp kwargs)."""
    kind = n % 10
    digits = "7" * 4000
    if kind == 0:  # the issue's reproduction: unknown CallSids with 4,000 digits
        return "GET", "/exotel/passthru", {"params": {"CallSid": f"CA{n}", "digits": digits}}
    if kind == 1:  # the same without credentials
        return (
            "GET",
            "/exotel/passthru",
            {"params": {"CallSid": f"CA{n}", "digits": digits}, "h": {}},
        )
    if kind == 2:
        return "GET", "/exotel/passthru", {"params": {"CallSid": f"CA{n}", "Stream": "{x"}}
    if kind == 3:
        return "POST", "/exotel/passthru", {"data": {f"k{i}": "v" for i in range(300)}}
    if kind == 4:
        body = orjson.dumps({"CallSid": f"CA{n}", "pad": "x" * 60_000})
        return "POST", "/exotel/passthru", {"data": body, "ct": "application/json"}
    if kind == 5:
        return "POST", "/exotel/status", {"data": b"\xff\xfe" * 500, "ct": "text/plain"}
    if kind == 6:
        return "POST", "/exotel/passthru", {"data": b"[" * 5000, "ct": "application/json"}
    if kind == 7:
        params = {"CallSid": f"CA{n}", "DialCallDuration": "inf"}
        return "GET", "/exotel/connect", {"params": params}
    if kind == 8:
        params = {"CallSid": f"CA{n}", "Status": f"weird-{n}"}
        return "GET", "/exotel/status", {"params": params}
    return "GET", "/exotel/connect", {"params": {"CallSid": f"CA{n}"}, "h": BAD}


async def flood(base: str, requests: int, concurrency: int, auth: dict[str, str]) -> Counter[str]:
    statuses: Counter[str] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(requests):
        queue.put_nowait(n)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                n = queue.get_nowait()
                method, path, kw = hostile(n)
                headers = dict(kw.pop("h", auth))
                if "ct" in kw:
                    headers["Content-Type"] = kw.pop("ct")
                try:
                    async with session.request(
                        method, base + path, headers=headers, allow_redirects=False, **kw
                    ) as r:
                        await r.read()
                        statuses[str(r.status)] += 1
                except aiohttp.ClientError as exc:
                    statuses[type(exc).__name__] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


async def run(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    prefix = f"flood{uuid.uuid4().hex[:6]}."
    create_topics(bootstrap, prefix)
    env = dict(
        os.environ,
        AGENTSTREAM_ROUTING_TOPIC_PREFIX=prefix,
        AGENTSTREAM_ROUTING_CONSUMER_GROUP=f"{prefix}routing",
    )
    if not args.no_auth:
        env["AGENTSTREAM_ROUTING_BASIC_AUTH"] = f"{KEY}:{TOKEN}"
    root: Path = args.server_root
    python = root / ".venv" / "bin" / "python"
    log_path = ROOT / "bench" / "results" / "routing_flood-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        server = subprocess.Popen(  # noqa: S603, ASYNC220 - started once, before the flood
            [
                str(python if python.exists() else sys.executable),
                "-m",
                "agentstream.cli",
                "routing",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--bootstrap",
                bootstrap,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=root,
        )
    try:
        assert server.stdout is not None
        line = await asyncio.to_thread(server.stdout.readline)
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line.decode())
        if not match:
            raise RuntimeError(f"routing did not start: {line!r}; see {log_path}")
        base = f"http://127.0.0.1:{match.group(1)}"
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                async with session.get(f"{base}/ready") as r:
                    if r.status == 200:
                        break
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # let start-up allocations settle before the baseline
        before = rss_kib(server.pid)
        samples: list[int] = []
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                samples.append(rss_kib(server.pid))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        t = time.perf_counter()
        statuses = await flood(base, args.requests, args.concurrency, GOOD)
        elapsed = time.perf_counter() - t
        done.set()
        await sampler
        await asyncio.sleep(1.0)
        after = rss_kib(server.pid)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/metrics", headers=GOOD) as r:
                metrics = await r.text()
        status_series = sum(
            1
            for ln in metrics.splitlines()
            if ln.startswith("agentstream_routing_callbacks_total") and 'endpoint="status"' in ln
        )
        return {
            "server_root": str(root),
            "auth": not args.no_auth,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "elapsed_s": round(elapsed, 2),
            "statuses": dict(sorted(statuses.items())),
            "server_5xx": sum(v for k, v in statuses.items() if k.startswith("5")),
            "rss_before_mib": round(before / 1024, 1),
            "rss_peak_mib": round(max(samples or [before]) / 1024, 1),
            "rss_after_mib": round(after / 1024, 1),
            "rss_growth_mib": round((after - before) / 1024, 1),
            "status_metric_series": status_series,
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="use this Kafka instead of the embedded broker")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--server-root", type=Path, default=ROOT, help="checkout to run routing from"
    )
    parser.add_argument("--no-auth", action="store_true", help="start routing without auth")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "routing_flood.json"
    )
    args = parser.parse_args()
    args.server_root = args.server_root.resolve()
    if args.bootstrap:
        result = asyncio.run(run(args, args.bootstrap))
    else:
        with EmbeddedBroker() as broker:
            result = asyncio.run(run(args, broker.bootstrap))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(
        f"{result['requests']} hostile requests in {result['elapsed_s']} s "
        f"(auth {'on' if result['auth'] else 'off'}, {result['server_root']}):\n"
        f"  answers {result['statuses']}  (5xx: {result['server_5xx']})\n"
        f"  routing RSS {result['rss_before_mib']} MiB before, {result['rss_peak_mib']} peak, "
        f"{result['rss_after_mib']} after (+{result['rss_growth_mib']} MiB)\n"
        f"  status metric series: {result['status_metric_series']}"
    )
    return 1 if result["server_5xx"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
