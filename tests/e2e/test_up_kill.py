"""`agentstream up --workers 2`, 8 live calls on one audio partition, its worker SIGKILLed mid-call:
the stack keeps running, the worker is restarted, and nothing is lost or duplicated.

Everything is real and started the way a user starts it: `up` with its embedded broker, ingest,
routing and two workers. The 8 demo calls get SIDs that Kafka's partitioner puts on one
partition, so one worker holds all of them; it is killed right after it published the first
transcript of any of them. The other worker (or the restarted one) takes the partition over:

* "Not lost": each stretch of speech in each call's audio is (mostly) inside final transcripts,
  and each call expected to escalate does.
* "Not duplicated": no utterance is transcribed, scored or decided twice, at most one escalation
  per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentstream.sim.calls import CallRun, SimOptions, Simulator, load_scenarios, plan_calls
from agentstream.sim.results import TopicWatcher
from agentstream.stack.broker import free_port
from tests.e2e.test_scaleout import MIN_COVERAGE, coverage, partition_of, speech_spans_ms
from tests.helpers import async_wait_until, wait_until
from tests.integration.foundation.test_up import _workers

# One rerun, as for the other e2e tests with real recognisers on a shared 2-core machine.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(420),
    pytest.mark.flaky(reruns=1),
]

ROOT = Path(__file__).resolve().parents[2]
CALLS = 8


@contextlib.contextmanager
def _up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, dict[str, str]]]:
    ports = {"broker": free_port(), "ingest": free_port(), "routing": free_port()}
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "AGENTSTREAM_INGEST_HOST": "127.0.0.1",
        "AGENTSTREAM_INGEST_PORT": str(ports["ingest"]),
        "AGENTSTREAM_ROUTING_HOST": "127.0.0.1",
        "AGENTSTREAM_ROUTING_PORT": str(ports["routing"]),
        "AGENTSTREAM_UP_RESTART_BACKOFF_S": "0.5",
    }
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
            [sys.executable, "-m", "agentstream.cli", "up", "--broker-port", str(ports["broker"])]
            + ["--workers", "2"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    urls = {
        "bootstrap": f"127.0.0.1:{ports['broker']}",
        "ingest": f"ws://127.0.0.1:{ports['ingest']}",
        "routing": f"http://127.0.0.1:{ports['routing']}",
    }
    try:
        yield proc, log, urls
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _one_partition(runs: list[CallRun]) -> int:
    """Give every call a SID on the first call's partition."""
    target = partition_of(runs[0].call_sid)
    counter = 0
    for run in runs[1:]:
        while True:
            counter += 1
            sid = f"{run.call_sid}p{counter}"
            if partition_of(sid) == target:
                break
        run.call_sid = sid
    return target


def _owner(log: Path, partition: int) -> int | None:
    """The worker process that last began reading the partition (its log lines carry its pid)."""
    found = re.findall(
        rf"^\[[^\]]+\] \[(\d+)\] \[INFO\] audio partition {partition}: reading from offset",
        log.read_text(errors="replace"),
        re.M,
    )
    return int(found[-1]) if found else None


def _covered(run: CallRun, watcher: TopicWatcher) -> bool:
    records = watcher.calls[run.call_sid]
    heard = all(
        coverage(span, records.finals) >= MIN_COVERAGE for span in speech_spans_ms(run.spec.path)
    )
    escalated = any(d.decision == "escalate" for d in records.decisions)
    return heard and (escalated or run.spec.expected != "escalate")


async def test_up_survives_a_killed_worker_with_8_calls_on_its_partition(tmp_path: Path) -> None:
    specs = load_scenarios(ROOT / "demo" / "scenarios.yaml")[:CALLS]
    with _up(tmp_path) as (proc, log, urls):
        wait_until(lambda: "ready:" in log.read_text(errors="replace"), timeout=240)
        assert proc.poll() is None, log.read_text()[-3000:]
        options = SimOptions(
            ingest_url=urls["ingest"], routing_url=urls["routing"], rates=(8000,), ramp_ms=200
        )
        runs = plan_calls(specs, CALLS, options)
        partition = _one_partition(runs)
        watcher = TopicWatcher(urls["bootstrap"])
        watcher.watch(run.call_sid for run in runs)
        await watcher.start()
        try:
            playing = asyncio.create_task(Simulator(runs, options).run())
            await async_wait_until(
                lambda: any(watcher.calls[r.call_sid].finals for r in runs), timeout=90
            )
            victim = _owner(log, partition)
            assert victim is not None and victim in _workers(proc.pid), "no owner found"
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            assert any(r.frames_sent < r.frames_total for r in runs), "kill was not mid-call"
            await playing
            try:
                await async_wait_until(
                    lambda: all(_covered(r, watcher) for r in runs), timeout=150, interval=0.5
                )
                settled = True
            except TimeoutError:
                settled = False
            await watcher.settle(10.0)
        finally:
            await watcher.stop()
        summary = {
            r.spec.name: [(t.start_ms, t.end_ms, t.text) for t in watcher.calls[r.call_sid].finals]
            for r in runs
        }
        text = log.read_text(errors="replace")
        took = time.monotonic() - killed_at
        assert settled, f"incomplete {took:.0f} s after the kill: {summary}\n{text[-4000:]}"
        assert proc.poll() is None, "up stopped when one worker died"
        assert len(_workers(proc.pid)) == 2 and victim not in _workers(proc.pid)
        assert "restarted worker-" in text, text[-3000:]

    for run in runs:
        records = watcher.calls[run.call_sid]
        label = f"{run.spec.name} ({run.call_sid})"
        assert run.error is None, label
        for what, items in (
            ("transcripts", records.finals),
            ("scores", records.scores),
            ("decisions", records.decisions),
        ):
            counts = Counter(item.utterance_id for item in items)
            assert not counts or max(counts.values()) == 1, f"{label}: duplicated {what} {counts}"
        escalations = [d for d in records.decisions if d.decision == "escalate"]
        assert len(escalations) == (1 if run.spec.expected == "escalate" else 0), (
            f"{label}: escalations {[d.rule_id for d in escalations]}; {summary[run.spec.name]}"
        )
