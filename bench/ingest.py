"""Ingest load benchmark: N concurrent Exotel calls at real time against `agentstream ingest`.

Starts the embedded broker (or uses --bootstrap) and the ingest server as a child process
(or uses --url; with --processes N > 1 the child supervises N server processes, and server CPU
and /metrics are summed over them), opens N WebSocket calls that each send one media frame
every --frame-ms (8 kHz PCM16 by default: 100 ms = 1,600 bytes, base64 in JSON, as Exotel
does), reads the audio topic back and prints: calls held, frames/s, frame-to-broker latency
(client send -> record readable in the topic, and server read -> Kafka ack from /metrics),
server CPU per call and loss. Writes JSON to bench/results/ingest-<calls>[-p<N>].json.

    .venv/bin/python bench/ingest.py --calls 1000 --duration 60
    .venv/bin/python bench/ingest.py --calls 200 --duration 20 --profile   # cProfile the server
    .venv/bin/python bench/ingest.py --calls 1000 --duration 60 --processes 4  # ingest --processes
    .venv/bin/python bench/ingest.py --session-only   # protocol session CPU per frame, no broker
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import pstats
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, TopicPartition
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentstream.stack.broker import EmbeddedBroker, free_port, free_port_run  # noqa: E402
from agentstream.stack.topics import create_topics  # noqa: E402


@dataclass
class CallStats:
    sent_at: list[float] = field(default_factory=list)  # wall clock per frame index
    closed_early: bool = False
    connect_failed: bool = False


SERVER_MAIN = (
    "import argparse, logging, sys; "
    "logging.basicConfig(level=logging.WARNING); "
    "from agentstream.commands.ingest import run; "
    "sys.exit(run(argparse.Namespace(host=None, port=None, bootstrap=None, processes=None, "
    "process_index=None, ready_fd=None, log_level='WARNING', no_create_topics=True)))"
)


def pin(pid: int, cpus: set[int], what: str) -> None:
    for task in Path(f"/proc/{pid}/task").iterdir():  # every thread (tansu runs tokio)
        os.sched_setaffinity(int(task.name), cpus)
    print(f"pinned {what} (pid {pid}) to cpus {sorted(cpus)}")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def clock_ticks(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live descendant (Linux /proc/<pid>/task/<tid>/children)."""
    found = [pid]
    for current in found:
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                found.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:  # the thread or process ended meanwhile
                continue
    return found


def tree_ticks(pid: int) -> dict[int, float]:
    """CPU seconds of ``pid`` and its descendants, per process (the supervisor of --processes N
    and its servers). Summing the difference of two of these over the pids in both counts the
    processes alive for the whole measurement; one restarted meanwhile would be missed."""
    ticks: dict[int, float] = {}
    for p in process_tree(pid):
        try:
            ticks[p] = clock_ticks(p)
        except OSError:
            continue
    return ticks


def tree_cpu(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(after[p] - before[p] for p in after.keys() & before.keys())


def merge_metrics(texts: list[str]) -> str:
    """One Prometheus text from several processes': every sample summed by name and labels
    (right for counters, histogram buckets and the gauges we read; comments dropped)."""
    totals: dict[str, float] = {}
    for text in texts:
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                totals[key] = totals.get(key, 0.0) + float(value)
    return "".join(f"{key} {value}\n" for key, value in totals.items())


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - local server
        return bytes(resp.read())


def http_url(ws_url: str, path: str) -> str:
    return ws_url.replace("ws://", "http://").rsplit("/", 1)[0] + path


def histogram_quantiles(metrics: str, name: str) -> dict[str, float]:
    """Approximate p50/p99 from a Prometheus histogram (upper bucket bound)."""
    buckets: list[tuple[float, float]] = []
    for line in metrics.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    total = buckets[-1][1] if buckets else 0.0
    out: dict[str, float] = {}
    for label, q in (("p50_le_ms", 0.5), ("p99_le_ms", 0.99)):
        out[label] = next((b * 1000 for b, c in buckets if total and c >= q * total), float("nan"))
    return out


def metric_value(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


async def run_call(
    index: int,
    url: str,
    frames: int,
    frame_s: float,
    start_at: float,
    payload: str,
    stats: CallStats,
) -> None:
    call_sid = f"BENCH{index:05d}"
    stream_sid = f"ST{index:05d}"
    try:
        ws = await connect(url, compression=None, open_timeout=30, ping_interval=None)
    except (OSError, TimeoutError, ConnectionClosed) as exc:
        stats.connect_failed = True
        print(f"call {index} connect failed: {exc!r}", file=sys.stderr)
        return
    head = f'{{"event":"media","stream_sid":"{stream_sid}","sequence_number":'
    try:
        await ws.send('{"event":"connected"}')
        start = {
            "event": "start",
            "sequence_number": 1,
            "stream_sid": stream_sid,
            "start": {
                "stream_sid": stream_sid,
                "call_sid": call_sid,
                "account_sid": "ACbench",
                "custom_parameters": {"tenant": "bench"},
                "media_format": {"encoding": "raw", "sample_rate": 8000, "bit_rate": "128kbps"},
            },
        }
        await ws.send(orjson.dumps(start).decode())
        loop = asyncio.get_running_loop()
        for n in range(frames):
            due = start_at + n * frame_s
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            message = (
                f'{head}{n + 2},"media":{{"chunk":{n + 1},"timestamp":{int(n * frame_s * 1000)},'
                f'"payload":"{payload}"}}}}'
            )
            stats.sent_at.append(time.time())
            await ws.send(message)
        stop = {
            "event": "stop",
            "sequence_number": frames + 2,
            "stream_sid": stream_sid,
            "stop": {"call_sid": call_sid, "reason": "callended"},
        }
        await ws.send(orjson.dumps(stop).decode())
        await ws.wait_closed()
    except ConnectionClosed:
        stats.closed_early = True


async def consume(
    bootstrap: str,
    topic: str,
    calls: list[CallStats],
    expected: int,
    done: asyncio.Event,
    latencies: list[float],
    server_to_topic: list[float],
) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    seen: set[tuple[int, int]] = set()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        while not parts:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        while len(seen) < expected:
            batches = await consumer.getmany(timeout_ms=200, max_records=20000)
            now = time.time()
            for records in batches.values():
                for record in records:
                    headers = dict(record.headers)
                    index = int((record.key or b"BENCH0")[5:])
                    frame = int(headers["as-sequence_number"]) - 2
                    if (index, frame) in seen:
                        continue
                    seen.add((index, frame))
                    sent = calls[index].sent_at
                    if frame < len(sent):
                        latencies.append(now - sent[frame])
                    server_to_topic.append(now - int(headers["as-received_at_ms"]) / 1000)
            if done.is_set() and not batches:
                break
    finally:
        await consumer.stop()
    return len(seen)


async def drive(
    args: argparse.Namespace,
    url: str,
    bootstrap: str,
    server_pid: int | None,
    broker_pid: int | None,
    metrics_urls: list[str],
) -> dict[str, Any]:
    frame_bytes = args.rate * 2 * args.frame_ms // 1000
    payload = base64.b64encode(os.urandom(frame_bytes)).decode()
    frames = int(args.duration * 1000 / args.frame_ms)
    frame_s = args.frame_ms / 1000
    calls = [CallStats() for _ in range(args.calls)]
    latencies: list[float] = []
    server_to_topic: list[float] = []
    done = asyncio.Event()
    topic = f"{args.prefix}agentstream.audio"
    consumer = asyncio.create_task(
        consume(bootstrap, topic, calls, args.calls * frames, done, latencies, server_to_topic)
    )
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 1.0
    tasks = []
    for i in range(args.calls):
        # spread call starts over the ramp, and frame phases over one frame period
        start_at = t0 + args.ramp * i / max(1, args.calls) + (i % 100) * frame_s / 100
        tasks.append(
            asyncio.create_task(run_call(i, url, frames, frame_s, start_at, payload, calls[i]))
        )
    steady_from = t0 + args.ramp + frame_s
    await asyncio.sleep(max(0.0, steady_from - loop.time()))
    cpu0 = tree_ticks(server_pid) if server_pid else None
    bcpu0 = clock_ticks(broker_pid) if broker_pid else None
    own0 = time.process_time()
    wall0 = time.monotonic()
    await asyncio.gather(*tasks)
    wall = time.monotonic() - wall0
    own = time.process_time() - own0
    cpu = tree_cpu(cpu0, tree_ticks(server_pid)) if server_pid and cpu0 is not None else None
    bcpu = (clock_ticks(broker_pid) - bcpu0) if broker_pid and bcpu0 is not None else None
    await asyncio.sleep(2.0)  # let the last acks land
    done.set()
    try:
        received = await asyncio.wait_for(consumer, 60)
    except TimeoutError:
        received = -1
    texts = [http_get(u).decode() for u in metrics_urls]
    metrics = merge_metrics(texts)
    sent = sum(len(c.sent_at) for c in calls)
    held = sum(1 for c in calls if not c.closed_early and not c.connect_failed)
    steady_frames = args.calls * (wall / frame_s)
    result = {
        "calls": args.calls,
        "server_processes": args.processes,
        # how the kernel spread the calls (SO_REUSEPORT) over the server processes
        "calls_per_process": [int(metric_value(t, "ingest_calls_total")) for t in texts],
        "calls_held": held,
        "connect_failed": sum(c.connect_failed for c in calls),
        "closed_early": sum(c.closed_early for c in calls),
        "duration_s": args.duration,
        "frame_ms": args.frame_ms,
        "frame_bytes": frame_bytes,
        "frames_sent": sent,
        "frames_in_topic": received,
        "lost": sent - received if received >= 0 else None,
        "frames_per_s": round(sent / (args.duration + args.ramp), 1),
        "send_to_topic_p50_ms": round(pct(latencies, 0.5) * 1000, 1),
        "send_to_topic_p99_ms": round(pct(latencies, 0.99) * 1000, 1),
        "send_to_topic_max_ms": round(max(latencies, default=float("nan")) * 1000, 1),
        "server_read_to_topic_p50_ms": round(pct(server_to_topic, 0.5) * 1000, 1),
        "server_read_to_topic_p99_ms": round(pct(server_to_topic, 0.99) * 1000, 1),
        "server_read_to_ack": histogram_quantiles(metrics, "ingest_produce_latency_seconds"),
        "server_frames_dropped": metric_value(metrics, "ingest_frames_dropped_total"),
        "server_produce_retries": metric_value(metrics, "ingest_produce_retries_total"),
        "server_cpu_s": round(cpu, 2) if cpu is not None else None,
        "server_cpu_per_call_pct": round(100 * cpu / wall / args.calls, 3) if cpu else None,
        "server_cpu_us_per_frame": round(1e6 * cpu / steady_frames, 1) if cpu else None,
        "server_cpu_core_pct": round(100 * cpu / wall, 1) if cpu else None,
        "broker_cpu_core_pct": round(100 * bcpu / wall, 1) if bcpu else None,
        # this process: the calls' sockets and the topic reader (on the same 2 cores, unpinned)
        "load_generator_cpu_core_pct": round(100 * own / wall, 1),
        "server_settings_env": {k: v for k, v in os.environ.items() if "INGEST_" in k},
        "loadavg": os.getloadavg(),
    }
    return result


def session_cpu(frames: int = 20_000, repeats: int = 5) -> dict[str, float]:
    """CPU per frame of the protocol session alone (parse, decode, record), no broker.

    Best of ``repeats``: the least disturbed figure on a shared machine. PCM16 is the hot
    path the tolerance work must not slow; μ-law adds its decode.
    """
    from ingest.metrics import IngestStats
    from ingest.session import StreamSession

    out: dict[str, float] = {}
    for name, encoding, payload in (
        ("pcm16", "raw", bytes(range(256)) * 6 + bytes(64)),
        ("mulaw", "audio/x-mulaw", bytes(range(256)) * 3 + bytes(32)),
    ):
        b64 = base64.b64encode(payload).decode()
        start = orjson.dumps(
            {
                "event": "start",
                "sequence_number": "1",
                "stream_sid": "MZ",
                "start": {
                    "stream_sid": "MZ",
                    "call_sid": "CA",
                    "custom_parameters": {"tenant": "acme"},
                    "media_format": {"encoding": encoding, "sample_rate": "8000"},
                },
            }
        ).decode()
        messages = [
            orjson.dumps(
                {
                    "event": "media",
                    "sequence_number": str(i),
                    "stream_sid": "MZ",
                    "media": {"chunk": str(i - 1), "timestamp": str(i * 100), "payload": b64},
                }
            ).decode()
            for i in range(2, frames + 2)
        ]
        best = float("inf")
        for _ in range(repeats):
            session = StreamSession(IngestStats(), "stream", {})
            session.on_message(start, 0.0)
            began = time.process_time()
            for message in messages:
                session.on_message(message, 0.0)
                session.outbox.clear()
            best = min(best, time.process_time() - began)
        out[f"session_cpu_us_per_{name}_frame"] = round(1e6 * best / frames, 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of audio per call")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds to open all calls")
    parser.add_argument("--frame-ms", type=int, default=100)
    parser.add_argument("--rate", type=int, default=8000)
    parser.add_argument("--bootstrap", help="use this Kafka (default: start the embedded broker)")
    parser.add_argument("--url", help="use this running server's /stream URL (no child server)")
    parser.add_argument("--prefix", default="", help="topic prefix (default: a fresh one)")
    parser.add_argument("--profile", action="store_true", help="run the server under cProfile")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="agentstream ingest --processes N: N server processes on the port (default 1)",
    )
    parser.add_argument(
        "--session-only",
        action="store_true",
        help="only the in-process session CPU per frame (PCM16 and mu-law), no broker",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="server on cpu 0, broker on cpu 1, load generator on the rest (needs >= 4 cpus)",
    )
    args = parser.parse_args()
    if args.processes > 1 and (args.profile or args.pin or args.url):
        parser.error("--processes > 1 does not go with --profile, --pin or --url")
    if args.session_only:
        for key, value in session_cpu().items():
            print(f"{key:40} {value}")
        return 0
    if not args.prefix:
        args.prefix = f"bench{int(time.time())}."

    broker = None
    server = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
    try:
        create_topics(bootstrap, args.prefix)
        url = args.url
        metrics_urls = [] if url is None else [http_url(url, "/metrics")]
        prof_path = ROOT / "bench" / "results" / f"ingest-{args.calls}.prof"
        prof_path.parent.mkdir(parents=True, exist_ok=True)
        if url is None:
            port = free_port()
            env = {
                **os.environ,
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "AGENTSTREAM_INGEST_TOPIC_PREFIX": args.prefix,
                "AGENTSTREAM_INGEST_PORT": str(port),
                "AGENTSTREAM_INGEST_HOST": "127.0.0.1",
                "AGENTSTREAM_INGEST_MAX_CALLS": str(max(2000, args.calls + 10)),
                "AGENTSTREAM_INGEST_PROCESSES": str(args.processes),
            }
            # one /health + /metrics port per server process (the shared port answers for one)
            ports = [port]
            if args.processes > 1:
                base = free_port_run(args.processes)
                env["AGENTSTREAM_INGEST_CHILD_METRICS_PORT"] = str(base)
                ports = list(range(base, base + args.processes))
            # the ingest command alone (agentstream.cli would import every subcommand)
            code = SERVER_MAIN
            if args.profile:
                code = (
                    "import cProfile\npr = cProfile.Profile()\npr.enable()\ntry:\n"
                    f"    exec({SERVER_MAIN!r})\nfinally:\n"
                    f"    pr.disable()\n    pr.dump_stats({str(prof_path)!r})\n"
                )
            cmd = [sys.executable, "-c", code]
            server = subprocess.Popen(cmd, env=env, cwd=ROOT)  # noqa: S603
            if args.pin:
                pin(server.pid, {0}, "server")
                if broker is not None and broker._proc is not None:
                    pin(broker._proc.pid, {1}, "broker")
                pin(os.getpid(), set(range(2, os.cpu_count() or 3)), "load generator")
            url = f"ws://127.0.0.1:{port}/stream"
            metrics_urls = [f"http://127.0.0.1:{p}/metrics" for p in ports]
            deadline = time.monotonic() + 30
            for p in ports:
                while True:
                    try:
                        http_get(f"http://127.0.0.1:{p}/health")
                        break
                    except OSError:
                        if time.monotonic() > deadline or server.poll() is not None:
                            raise RuntimeError("ingest server did not start") from None
                        time.sleep(0.1)
        pid = server.pid if server else None
        broker_pid = broker._proc.pid if broker is not None and broker._proc else None
        result = uvloop.run(drive(args, url, bootstrap, pid, broker_pid, metrics_urls))
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        if broker is not None:
            broker.stop()
    for key, value in result.items():
        print(f"{key:32} {value}")
    suffix = f"-p{args.processes}" if args.processes > 1 else ""
    out = ROOT / "bench" / "results" / f"ingest-{args.calls}{suffix}.json"
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"wrote {out}")
    if args.profile and prof_path.exists():
        stats = pstats.Stats(str(prof_path))
        stats.sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
