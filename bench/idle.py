"""Idle cost of the stack: CPU per process of ``agentstream up`` with no call at all.

Starts ``agentstream up`` as a subprocess (embedded broker, ingest, workers, routing) on free
loopback ports, waits until every service is ready (ingest ``/health``, routing ``/ready``, each
worker's "Ready" line), lets it settle, then reads each process's CPU seconds from
``/proc/<pid>/stat`` at the start and the end of the sample window and prints, per process,
the CPU seconds used and the share of one core, with the load average of the machine (CPU
seconds are comparable on a busy machine; wall-clock latency is not). Stops everything at the
end (SIGTERM, then SIGKILL of the process group after a bound).

    .venv/bin/python bench/idle.py                     # 20 s sample, up's default workers
    .venv/bin/python bench/idle.py --seconds 60 --workers 1
    .venv/bin/python bench/idle.py --env AGENTSTREAM_WORKER_FETCH_MAX_WAIT_MS=30
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
WORKER_READY = ("[^Worker]: Ready", "worker ready")
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def cpu_rss(pid: int) -> tuple[float, float] | None:
    """(CPU seconds used so far, RSS MiB) of one process, all its threads, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/statm") as f:
            rss_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, rss_pages * PAGE / 2**20


def children(pid: int) -> dict[int, str]:
    """Direct children of ``pid``, named after what they run (broker, ingest, worker-2...)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid != pid:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if words and words[0].endswith("tansu"):
            found[int(entry.name)] = "broker (tansu)"
        elif "agentstream.cli" in words:
            found[int(entry.name)] = words[words.index("agentstream.cli") + 1]
        else:
            found[int(entry.name)] = Path(words[0]).name if words else "?"
    counts = Counter(found.values())
    seen: Counter[str] = Counter()
    for child, name in sorted(found.items()):
        if counts[name] > 1:
            seen[name] += 1
            found[child] = f"{name}-{seen[name]}"
    return found


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(
    proc: subprocess.Popen[bytes], log: Path, ingest: int, routing: int, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"agentstream up exited ({proc.returncode}):\n{tail}")
        workers = sum(1 for name in children(proc.pid).values() if name.startswith("worker"))
        text = log.read_text(errors="replace")
        ready_workers = sum(text.count(marker) for marker in WORKER_READY)
        if (
            workers
            and ready_workers >= workers
            and http_ok(f"http://{HOST}:{ingest}/health")
            and http_ok(f"http://{HOST}:{routing}/ready")
        ):
            return
        time.sleep(0.5)
    raise SystemExit(f"stack not ready within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything the supervisor left behind


def sample(pids: dict[int, str], seconds: float) -> list[dict[str, float | str]]:
    before = {pid: cpu_rss(pid) for pid in pids}
    time.sleep(seconds)
    rows: list[dict[str, float | str]] = []
    for pid, name in pids.items():
        start, end = before[pid], cpu_rss(pid)
        if start is None or end is None:
            continue
        used = end[0] - start[0]
        rows.append(
            {"process": name, "pid": pid, "cpu_s": used, "pct": 100 * used / seconds, "rss": end[1]}
        )
    return rows


def print_table(rows: list[dict[str, float | str]], seconds: float, load: str) -> None:
    print(f"\nidle stack, {seconds:.0f} s sample, {os.cpu_count()} cores, load average {load}")
    print(f"{'process':<16} {'CPU s':>7} {'% core':>7} {'RSS MiB':>8}")
    for row in sorted(rows, key=lambda r: -float(r["cpu_s"])):
        print(f"{row['process']!s:<16} {row['cpu_s']:>7.2f} {row['pct']:>6.1f}% {row['rss']:>8.0f}")
    total = sum(float(r["cpu_s"]) for r in rows)
    print(f"{'total':<16} {total:>7.2f} {100 * total / seconds:>6.1f}%")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="sample window")
    parser.add_argument("--settle", type=float, default=10.0, help="wait after ready")
    parser.add_argument("--workers", help="passed to `agentstream up --workers`")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for every service")
    parser.add_argument("--ready-timeout", type=float, default=240.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="JSON folder")
    args = parser.parse_args()

    broker, ingest, routing = free_port(), free_port(), free_port()
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "AGENTSTREAM_INGEST_HOST": HOST,
            "AGENTSTREAM_INGEST_PORT": str(ingest),
            "AGENTSTREAM_ROUTING_HOST": HOST,
            "AGENTSTREAM_ROUTING_PORT": str(routing),
        }
    )
    for item in args.env:
        name, _, value = item.partition("=")
        env[name] = value
    argv = [sys.executable, "-m", "agentstream.cli", "up", "--broker-port", str(broker)]
    if args.workers:
        argv += ["--workers", args.workers]
    log = Path(tempfile.mkdtemp(prefix="agentstream-idle-")) / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        started = time.monotonic()
        wait_ready(proc, log, ingest, routing, args.ready_timeout)
        print(f"ready in {time.monotonic() - started:.1f} s; settling {args.settle:.0f} s")
        time.sleep(args.settle)
        pids = {proc.pid: "up (supervisor)", **children(proc.pid)}
        load_before = os.getloadavg()
        rows = sample(pids, args.seconds)
        load_after = os.getloadavg()
    finally:
        stop(proc)
    load = " -> ".join(" ".join(f"{v:.2f}" for v in la) for la in (load_before, load_after))
    print_table(rows, args.seconds, load)
    print(f"log: {log}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"idle-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"argv": sys.argv[1:], "load": load, "rows": rows}, indent=2))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
