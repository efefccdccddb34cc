"""Passthru under load: 1,000 requests/s for 30 s against a routing service holding 10,000 calls.

What it does:
1. starts the embedded broker (or uses ``--bootstrap``) and creates topics under a fresh prefix;
2. starts ``agentstream routing`` as a separate process (the real command, uvloop);
3. loads a realistic state through Kafka: ``--calls`` calls, each with a start event,
   ``--utterances`` scores and a stop event (Passthru comes after the stream ends),
   ``--angry-share`` of them angry, and waits until every score is decided;
4. fires Passthru GETs open-loop at ``--rate`` requests/s for ``--duration`` s from this process
   (aiohttp, keep-alive), a mix of known calls (Stream[...] params, some Stream=<json>, some
   quoted digits) and ``--unknown-share`` unknown CallSids, and checks every answer
   (302 for escalated calls, 200 otherwise);
5. meanwhile produces ``--score-rate`` scores/s for fresh calls and reads the decisions back, for
   the score-to-decision latency under load (the service's own ``latency_ms`` and the full
   produce -> decision-read round trip).

Prints p50/p95/p99/max latency, achieved rate, errors and wrong answers; writes JSON to
``bench/results/passthru.json``. Usage: ``.venv/bin/python bench/passthru.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import time
import uuid
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agentstream.stack.broker import EmbeddedBroker  # noqa: E402
from agentstream.stack.topics import create_topics  # noqa: E402
from schemas.records import CallEvent, CallState, Decision, Score, Sentiment  # noqa: E402
from schemas.topics import CALLS, DECISIONS, SCORES, prefixed  # noqa: E402

TENANTS = [
    ("acme-finance", "collections"),
    ("shopnow", "deflection"),
    ("city-clinic", "appointments"),
    ("hirewell", "interview"),
]
CALM = ["Yes I can pay on Friday.", "What time do you open?", "Tuesday morning works.", "Thanks."]
ANGRY = ["This is terrible.", "You are useless and I am angry.", "Worst company ever."]


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def now_ms() -> int:
    return int(time.time() * 1000)


def make_score(call_sid: str, tenant: tuple[str, str], index: int, angry: bool) -> Score:
    value = -0.85 if angry else 0.5
    text = ANGRY[index % len(ANGRY)] if angry else CALM[index % len(CALM)]
    t = now_ms()
    return Score(
        call_sid=call_sid,
        stream_sid=f"ST{call_sid[2:]}",
        tenant=tenant[0],
        campaign=tenant[1],
        utterance_id=f"{call_sid}-{index}",
        utterance_index=index,
        text=text,
        sentiment=Sentiment(score=value, label="negative" if angry else "positive", confidence=0.9),
        state=CallState(utterance_count=index + 1),
        speech_end_at_ms=t - 800,
        transcript_at_ms=t - 5,
        scored_at_ms=t,
        latency_ms=5.0,
    )


async def load_state(
    bootstrap: str, prefix: str, calls: int, utterances: int, angry_share: float
) -> tuple[list[str], set[str]]:
    rng = random.Random(7)
    sids = [f"CA{uuid.uuid4().hex}" for _ in range(calls)]
    angry = {sid for sid in sids if rng.random() < angry_share}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
    await producer.start()
    try:
        futures = []
        for n, sid in enumerate(sids):
            tenant = TENANTS[n % len(TENANTS)]
            start = CallEvent(
                kind="start",
                call_sid=sid,
                stream_sid=f"ST{sid[2:]}",
                tenant=tenant[0],
                campaign=tenant[1],
                occurred_at_ms=now_ms(),
            )
            futures.append(
                await producer.send(prefixed(CALLS, prefix), start.to_bytes(), key=sid.encode())
            )
        for index in range(utterances):
            for n, sid in enumerate(sids):
                score = make_score(sid, TENANTS[n % len(TENANTS)], index, sid in angry)
                futures.append(
                    await producer.send(
                        prefixed(SCORES, prefix), score.to_bytes(), key=sid.encode()
                    )
                )
        # The stream has ended when Exotel calls Passthru: every call gets its stop event.
        for n, sid in enumerate(sids):
            tenant = TENANTS[n % len(TENANTS)]
            stop = CallEvent(
                kind="stop",
                call_sid=sid,
                stream_sid=f"ST{sid[2:]}",
                tenant=tenant[0],
                campaign=tenant[1],
                stop_reason="stopped",
                occurred_at_ms=now_ms(),
            )
            futures.append(
                await producer.send(prefixed(CALLS, prefix), stop.to_bytes(), key=sid.encode())
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sids, angry


async def metric_total(session: aiohttp.ClientSession, base: str, prefix: str) -> float:
    """Sum of every sample whose line starts with ``prefix`` (name plus optional labels)."""
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(prefix):
            total += float(line.rsplit(" ", 1)[1])
    return total


def passthru_params(sid: str, rng: random.Random) -> dict[str, str]:
    params = {
        "CallSid": sid,
        "CallFrom": "09876543210",
        "CallTo": "08047112233",
        "Direction": "incoming",
        "CurrentTime": "2026-01-01 10:00:00",
    }
    style = rng.random()
    if style < 0.6:
        params.update(
            {
                "Stream[StreamSID]": f"ST{sid[2:]}",
                "Stream[Status]": "completed",
                "Stream[Duration]": "42",
                "Stream[DisconnectedBy]": "bot",
            }
        )
    elif style < 0.9:
        params["Stream"] = orjson.dumps(
            {"StreamSID": f"ST{sid[2:]}", "Status": "completed", "Duration": 42}
        ).decode()
    else:
        params["digits"] = '"1"'
    return params


async def fire(
    base: str,
    sids: list[str],
    angry: set[str],
    rate: float,
    duration: float,
    unknown_share: float,
    concurrency: int,
) -> dict[str, Any]:
    rng = random.Random(11)
    latencies: list[float] = []
    lags: list[float] = []
    errors: dict[str, int] = {}
    wrong = 0
    sent = 0
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=60)
    session = aiohttp.ClientSession(connector=connector)
    url = f"{base}/exotel/passthru?"
    tasks: set[asyncio.Task[None]] = set()
    # Encode each call's query once: the client must spend its CPU on requests, not on yarl.
    urls = {sid: URL(url + urlencode(passthru_params(sid, rng)), encoded=True) for sid in sids}

    async def one(sid: str, expected: int, scheduled: float) -> None:
        nonlocal wrong
        target = urls.get(sid) or URL(url + urlencode(passthru_params(sid, rng)), encoded=True)
        started = time.perf_counter()
        lags.append(started - scheduled)
        try:
            async with session.get(target, allow_redirects=False) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return
        latencies.append(time.perf_counter() - started)
        if status not in (200, 302):
            errors[str(status)] = errors.get(str(status), 0) + 1
        elif status != expected:
            wrong += 1

    t0 = time.perf_counter() + 0.1
    total = int(rate * duration)
    for i in range(total):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if rng.random() < unknown_share:
            sid, expected = f"CAunknown{uuid.uuid4().hex}", 200
        else:
            sid = rng.choice(sids)
            expected = 302 if sid in angry else 200
        task = asyncio.create_task(one(sid, expected, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    elapsed = time.perf_counter() - t0
    await session.close()
    arr = [x * 1000 for x in latencies]
    lag = [x * 1000 for x in lags]
    return {
        "requests": sent,
        "answered": len(latencies),
        "achieved_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(arr, 50), 3),
        "p95_ms": round(percentile(arr, 95), 3),
        "p99_ms": round(percentile(arr, 99), 3),
        "max_ms": round(max(arr, default=float("nan")), 3),
        "client_schedule_lag_p99_ms": round(percentile(lag, 99), 3),
        "errors": errors,
        "wrong_answers": wrong,
    }


async def score_load(
    bootstrap: str, prefix: str, rate: float, duration: float, ready: Any, go: Any
) -> dict[str, Any]:
    """Scores for fresh calls at ``rate``/s; read the decisions back."""
    sent_at: dict[str, float] = {}
    service_latency: list[float] = []
    round_trip: list[float] = []
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks="all")
    consumer = AIOKafkaConsumer(
        prefixed(DECISIONS, prefix),
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="latest",
        fetch_max_wait_ms=20,
    )
    await producer.start()
    await consumer.start()
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set() or len(round_trip) < len(sent_at):
            batches = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batches.values():
                for raw in records:
                    decision = Decision.model_validate(orjson.loads(raw.value))
                    uid = decision.utterance_id or ""
                    if uid in sent_at:
                        round_trip.append((now - sent_at.pop(uid)) * 1000)
                        service_latency.append(decision.latency_ms)
            if done.is_set() and not batches:
                break

    reader = asyncio.create_task(read())
    await asyncio.sleep(2.0)  # let the reader position itself at the end
    ready.set()
    await asyncio.to_thread(go.wait)
    rng = random.Random(3)
    t0 = time.perf_counter()
    total = int(rate * duration)
    for i in range(total):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sid = f"CAload{i // 4:06d}{uuid.uuid4().hex[:6]}"
        score = make_score(sid, TENANTS[i % 4], i % 4, rng.random() < 0.1)
        sent_at[score.utterance_id] = time.perf_counter()
        await producer.send(prefixed(SCORES, prefix), score.to_bytes(), key=sid.encode())
    await asyncio.sleep(3)
    done.set()
    await asyncio.wait_for(reader, 30)
    await producer.stop()
    await consumer.stop()
    svc, rt = service_latency, round_trip
    return {
        "scores_sent": total,
        "decisions_read": len(round_trip),
        "service_latency_p50_ms": round(percentile(svc, 50), 2),
        "service_latency_p99_ms": round(percentile(svc, 99), 2),
        "round_trip_p50_ms": round(percentile(rt, 50), 2),
        "round_trip_p99_ms": round(percentile(rt, 99), 2),
        "round_trip_max_ms": round(max(rt, default=float("nan")), 2),
    }


def score_load_process(
    bootstrap: str, prefix: str, rate: float, duration: float, ready: Any, go: Any, out: Any
) -> None:
    import uvloop

    out.put(uvloop.run(score_load(bootstrap, prefix, rate, duration, ready, go)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    create_topics(bootstrap, prefix)
    env = dict(
        os.environ,
        AGENTSTREAM_ROUTING_TOPIC_PREFIX=prefix,
        AGENTSTREAM_ROUTING_CONSUMER_GROUP=f"{prefix}routing",
    )
    log_path = ROOT / "bench" / "results" / "passthru-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        server = subprocess.Popen(  # noqa: S603, ASYNC220 - started once, before any load
            [
                sys.executable,
                "-m",
                "agentstream.cli",
                "--log-level",
                "WARNING",
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
            cwd=ROOT,
        )
    try:
        assert server.stdout is not None
        line = await asyncio.to_thread(server.stdout.readline)
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line.decode())
        if not match:
            raise RuntimeError(f"routing did not start: {line!r}; see {log_path}")
        base = f"http://127.0.0.1:{match.group(1)}"
        print(f"routing at {base}; loading {args.calls} calls x {args.utterances} scores ...")
        t = time.perf_counter()
        sids, angry = await load_state(
            bootstrap, prefix, args.calls, args.utterances, args.angry_share
        )
        expected = args.calls * args.utterances
        async with aiohttp.ClientSession() as session:
            while True:
                decided = await metric_total(session, base, "agentstream_routing_decisions_total{")
                # escalated calls stop producing decisions after their escalation
                escalated = await metric_total(
                    session, base, 'agentstream_routing_decisions_total{decision="escalate"'
                )
                # an escalated call is decided no further: at least one decision fewer
                if escalated >= len(angry) and decided >= expected - escalated:
                    break
                if time.perf_counter() - t > 240:
                    raise RuntimeError(f"state not loaded: {decided} decisions")
                await asyncio.sleep(0.5)
        load_s = time.perf_counter() - t
        print(f"state loaded in {load_s:.1f} s ({len(angry)} escalated calls); firing ...")
        # Scores and decisions run in their own process so they do not slow the HTTP client.
        ctx = get_context("spawn")
        ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
        scorer = ctx.Process(
            target=score_load_process,
            args=(bootstrap, prefix, args.score_rate, args.duration, ready, go, out),
        )
        scorer.start()
        await asyncio.to_thread(ready.wait, 60)
        cpu_before = cpu_seconds(server.pid)
        go.set()
        passthru_task = asyncio.create_task(
            fire(
                base,
                sids,
                angry,
                args.rate,
                args.duration,
                args.unknown_share,
                args.concurrency,
            )
        )
        passthru_result = await passthru_task
        server_cpu = cpu_seconds(server.pid) - cpu_before
        score_result = await asyncio.to_thread(out.get, True, 60)
        scorer.join(10)
        async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as r:
            server_metrics = await r.text()
        hist = [
            ln
            for ln in server_metrics.splitlines()
            if ln.startswith("agentstream_routing_callback_seconds_bucket")
            and 'endpoint="passthru"' in ln
        ]
        return {
            "calls": args.calls,
            "utterances_per_call": args.utterances,
            "escalated_calls": len(angry),
            "state_load_s": round(load_s, 1),
            "rate_rps": args.rate,
            "duration_s": args.duration,
            "passthru": passthru_result,
            "score_to_decision_under_load": score_result,
            "server_histogram": hist,
            "server_cpu_s": round(server_cpu, 2),
            "server_cpu_us_per_request": round(
                server_cpu / max(1, passthru_result["answered"]) * 1e6, 1
            ),
            "cpu_count": os.cpu_count(),
            "loadavg_after": os.getloadavg(),
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
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--utterances", type=int, default=3)
    parser.add_argument("--angry-share", type=float, default=0.1)
    parser.add_argument("--rate", type=float, default=1000.0, help="Passthru requests per s")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--unknown-share", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=64, help="client connections")
    parser.add_argument("--score-rate", type=float, default=100.0, help="scores/s during load")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "passthru.json")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.bootstrap:
        result = asyncio.run(run(args, args.bootstrap))
    else:
        with EmbeddedBroker() as broker:
            result = asyncio.run(run(args, broker.bootstrap))
    p = result["passthru"]
    s = result["score_to_decision_under_load"]
    print(
        f"\nPassthru: {p['answered']}/{p['requests']} answered at {p['achieved_rps']} req/s "
        f"with {result['calls']} calls in state ({result['escalated_calls']} escalated)\n"
        f"  latency p50 {p['p50_ms']} ms  p95 {p['p95_ms']} ms  p99 {p['p99_ms']} ms  "
        f"max {p['max_ms']} ms\n"
        f"  errors {p['errors'] or 0}  wrong answers {p['wrong_answers']}  "
        f"client schedule lag p99 {p['client_schedule_lag_p99_ms']} ms\n"
        f"Score -> decision under load ({s['scores_sent']} scores, {s['decisions_read']} read):\n"
        f"  service latency_ms p50 {s['service_latency_p50_ms']}  p99 "
        f"{s['service_latency_p99_ms']}\n"
        f"  produce -> decision read p50 {s['round_trip_p50_ms']} ms  p99 "
        f"{s['round_trip_p99_ms']} ms  max {s['round_trip_max_ms']} ms\n"
        f"Server CPU during the run: {result['server_cpu_s']} s "
        f"({result['server_cpu_us_per_request']} us per request, Kafka work included)\n"
        f"  loadavg after: {result['loadavg_after']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
