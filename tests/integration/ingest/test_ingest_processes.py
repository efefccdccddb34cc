"""`agentstream ingest --processes 2`: two servers on one port, supervised, as real processes.

Which process takes a connection is the kernel's choice (a hash of the address pair), so the
tests open calls until each process holds some, and tell them apart by each process's own
/health port (``AGENTSTREAM_INGEST_CHILD_METRICS_PORT``), which names its index and pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from websockets.asyncio.client import ClientConnection, connect

from agentstream.stack.broker import free_port, free_port_run
from schemas.records import Decision
from schemas.topics import DECISIONS, prefixed
from tests.helpers import async_wait_until
from tests.integration.ingest.ingest_support import (
    media,
    pcm,
    read_audio,
    read_calls,
    start,
    stop,
)

pytestmark = pytest.mark.integration

# The kernel picks a process per connection (like a coin here): within 64 connections each of
# two processes gets 8 but for a chance of about 1e-10.
MAX_CALLS_OPENED = 64


def _get(port: int, path: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return bytes(resp.read())
    except OSError:
        return None


def _health(port: int) -> dict[str, Any] | None:
    body = _get(port, "/health")
    return None if body is None else dict(orjson.loads(body))


def _counter(metrics: bytes, name: str) -> float:
    for line in metrics.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


class Ingest:
    """``agentstream ingest --processes 2`` with its output collected as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, stats_base: int) -> None:
        self.proc = proc
        self.port = port
        self.stats_ports = [stats_base, stats_base + 1]
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def healths(self) -> list[dict[str, Any] | None]:
        return list(
            await asyncio.gather(*(asyncio.to_thread(_health, p) for p in self.stats_ports))
        )

    async def ready(self) -> bool:
        return all(h is not None for h in await self.healths())

    async def pids(self) -> list[int]:
        healths = await self.healths()
        assert [h["process_index"] if h else None for h in healths] == [0, 1]
        return [int(h["pid"]) for h in healths if h]

    async def active(self) -> list[int]:
        return [int(h["active_calls"]) if h else -1 for h in await self.healths()]

    async def frames_in(self) -> float:
        bodies = await asyncio.gather(
            *(asyncio.to_thread(_get, p, "/metrics") for p in self.stats_ports)
        )
        return sum(_counter(b, "ingest_frames_total") for b in bodies if b is not None)

    async def all_follow_decisions(self) -> bool:
        return all(h is not None and h["decisions_ready"] for h in await self.healths())

    async def open_call(self, path: str, call_sid: str) -> tuple[ClientConnection, int]:
        """Open a call and start it; which process took it (its active calls went up).

        Calls are only ever added while this runs (none closes), so exactly one count rises.
        """
        before = await self.active()
        ws = await connect(f"ws://127.0.0.1:{self.port}{path}")
        await ws.send(start(call_sid, f"ST-{call_sid}"))
        after = before

        async def counted() -> bool:  # the handler counts the call just after the handshake
            nonlocal after
            after = await self.active()
            return sum(after) == sum(before) + 1

        await async_wait_until(counted, timeout=10)
        (index,) = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if b == a + 1]
        return ws, index

    async def finish(self, timeout: float = 40.0) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(self._reader, 10)
        return code


async def _start(bootstrap: str, prefix: str, port: int | None = None) -> Ingest:
    port = port or free_port()
    stats_base = free_port_run(2)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AGENTSTREAM_INGEST_TOPIC_PREFIX": prefix,
        "AGENTSTREAM_INGEST_HOST": "127.0.0.1",
        "AGENTSTREAM_INGEST_PORT": str(port),
        "AGENTSTREAM_INGEST_CHILD_METRICS_PORT": str(stats_base),
        "AGENTSTREAM_INGEST_LINGER_MS": "2",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentstream.cli",
        "ingest",
        "--processes",
        "2",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return Ingest(proc, port, stats_base)


@contextlib.asynccontextmanager
async def _running(bootstrap: str, prefix: str) -> AsyncIterator[Ingest]:
    ingest = await _start(bootstrap, prefix)
    try:
        await async_wait_until(ingest.ready, timeout=30)
        yield ingest
    finally:
        if ingest.proc.returncode is None:
            ingest.proc.kill()  # the children die with it (PR_SET_PDEATHSIG)
            await ingest.proc.wait()


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


async def _escalate(bootstrap: str, prefix: str, partitions: dict[str, int]) -> None:
    """An escalation for each call SID, written to the decisions partition given for it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for call_sid, partition in partitions.items():
            decision = Decision(
                call_sid=call_sid,
                decision="escalate",
                rule_id="angry-caller",
                reason="test",
                decided_at_ms=int(time.time() * 1000),
                latency_ms=1.0,
            )
            await producer.send_and_wait(
                prefixed(DECISIONS, prefix),
                decision.to_bytes(),
                key=call_sid.encode(),
                partition=partition,
            )
    finally:
        await producer.stop()


async def test_two_processes_share_the_port_and_stop_on_sigterm(
    kafka_bootstrap: str, topic_prefix: str, unique: str
) -> None:
    async with _running(kafka_bootstrap, topic_prefix) as ingest:
        pids = await ingest.pids()
        assert len(set(pids)) == 2 and ingest.proc.pid not in pids
        # stream calls until each process holds one; voicebot calls until each holds one per
        # decisions partition (each process hands off a call from every partition below)
        calls: dict[str, tuple[ClientConnection, int]] = {}
        for path, wanted in (("/stream", 1), ("/voicebot", DECISIONS.partitions)):
            held = [0, 0]
            for n in range(MAX_CALLS_OPENED):
                if min(held) >= wanted:
                    break
                sid = f"CA{unique}{path[1]}{n}"
                calls[sid] = await ingest.open_call(path, sid)
                held[calls[sid][1]] += 1
            assert min(held) >= wanted, held
        sent: dict[str, list[bytes]] = {}
        for sid, (ws, _) in calls.items():
            sent[sid] = [pcm(1600, len(sent) * 8 + seq) for seq in range(2, 7)]
            for seq, frame in enumerate(sent[sid], start=2):
                await ws.send(media(f"ST-{sid}", seq, seq - 1, (seq - 2) * 100, frame))
        total = sum(map(len, sent.values()))

        # every frame read (so each voicebot call's start was handled before its decision)
        async def all_read() -> bool:
            return await ingest.frames_in() == total

        await async_wait_until(all_read, timeout=15)

        # each process reads every decisions partition (no consumer group splits them) and
        # hands off the calls it holds: process i's k-th call is escalated on partition k
        await async_wait_until(ingest.all_follow_decisions, timeout=15)
        bots = [sid for sid in calls if sid[len(f"CA{unique}")] == "v"]
        routes: dict[str, int] = {}
        for index in (0, 1):
            mine = [sid for sid in bots if calls[sid][1] == index]
            routes.update({sid: k % DECISIONS.partitions for k, sid in enumerate(mine)})
        await _escalate(kafka_bootstrap, topic_prefix, routes)
        for sid in bots:
            ws = calls[sid][0]
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 15))["event"] == "clear"
            await asyncio.wait_for(ws.wait_closed(), 15)
            assert ws.close_code == 1000

        ingest.proc.send_signal(signal.SIGTERM)
        for sid, (ws, _) in calls.items():
            if sid not in bots:
                await asyncio.wait_for(ws.wait_closed(), 30)
                assert ws.close_code == 1001  # each process shut down gracefully
        assert await ingest.finish() == 0, ingest.output
        await async_wait_until(lambda: all(_gone(p) for p in pids), timeout=5)

    audio = await read_audio(kafka_bootstrap, topic_prefix, total)
    got: dict[str, list[bytes]] = {}
    for key, value, _ in audio:
        got.setdefault(key.decode(), []).append(value)
    assert got == sent
    events = await read_calls(kafka_bootstrap, topic_prefix, 2 * len(calls) + len(bots))
    stops = {c.call_sid: c.stop_reason for c in events if c.kind == "stop"}
    assert stops == {sid: "handoff" if sid in bots else "shutdown" for sid in calls}
    assert "ingest: 2 processes ready" in ingest.output


async def test_a_killed_process_is_restarted_while_the_other_serves(
    kafka_bootstrap: str, topic_prefix: str, unique: str
) -> None:
    async with _running(kafka_bootstrap, topic_prefix) as ingest:
        pids = await ingest.pids()
        by_index: dict[int, tuple[str, ClientConnection]] = {}
        for n in range(MAX_CALLS_OPENED):  # the extra calls stay open until the end
            if len(by_index) == 2:
                break
            sid = f"CA{unique}k{n}"
            ws, index = await ingest.open_call("/stream", sid)
            by_index.setdefault(index, (sid, ws))
        assert sorted(by_index) == [0, 1]

        os.kill(pids[0], signal.SIGKILL)
        doomed = by_index[0][1]
        await asyncio.wait_for(doomed.wait_closed(), 15)
        assert doomed.close_code == 1006  # no closing handshake: the process is gone

        # process 1 goes on serving its call while process 0 is down and restarted
        sid, ws = by_index[1]
        frames = [pcm(1600, seq) for seq in range(2, 12)]
        for seq, frame in enumerate(frames, start=2):
            await ws.send(media(f"ST-{sid}", seq, seq - 1, (seq - 2) * 100, frame))
        await ws.send(stop(sid, f"ST-{sid}", 12))
        await asyncio.wait_for(ws.wait_closed(), 15)
        assert ws.close_code == 1000

        async def restarted() -> bool:
            health = (await ingest.healths())[0]
            return health is not None and health["pid"] not in pids

        await async_wait_until(restarted, timeout=20)
        assert _gone(pids[0])
        # logged before the new process started; read from the pipe as it comes
        await async_wait_until(lambda: "restarted ingest-0" in ingest.output, timeout=10)
        assert "ingest-0 exited with code -9; restarting in 1.0 s" in ingest.output
        assert (await ingest.pids())[1] == pids[1]  # the other one was never touched

        ingest.proc.send_signal(signal.SIGTERM)
        assert await ingest.finish() == 0, ingest.output
    audio = await read_audio(kafka_bootstrap, topic_prefix, len(frames))
    assert [value for key, value, _ in audio if key.decode() == sid] == frames


async def test_port_in_use_fails_at_once_with_exit_2(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    with socket.socket() as taken:  # a listener without SO_REUSEPORT: nobody may share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ingest = await _start(kafka_bootstrap, topic_prefix, port)
        try:
            code = await ingest.finish(timeout=40)
        finally:
            if ingest.proc.returncode is None:
                ingest.proc.kill()
                await ingest.proc.wait()
    assert code == 2, ingest.output
    assert "could not start" in ingest.output
    assert f"cannot listen on 127.0.0.1:{port}" in ingest.output
    assert "restarted" not in ingest.output
