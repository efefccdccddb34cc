"""`agentstream ingest` as a process: prints where it listens; SIGTERM flushes and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from websockets.asyncio.client import connect

from agentstream.stack.broker import free_port
from tests.helpers import wait_until
from tests.integration.ingest.ingest_support import media, pcm, read_audio, read_calls, start

pytestmark = pytest.mark.integration


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


async def test_cli_serves_and_sigterm_flushes(kafka_bootstrap: str, topic_prefix: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "AGENTSTREAM_INGEST_TOPIC_PREFIX": topic_prefix,
        "AGENTSTREAM_INGEST_HOST": "127.0.0.1",
        "AGENTSTREAM_INGEST_PORT": str(port),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentstream.cli",
        "ingest",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        await asyncio.to_thread(wait_until, lambda: _healthy(port), 30.0)
        async with connect(f"ws://127.0.0.1:{port}/stream") as ws:
            await ws.send(start("CA-CLI", "ST-CLI"))
            for seq in range(2, 12):
                await ws.send(media("ST-CLI", seq, seq - 1, (seq - 2) * 100, pcm(1600, seq)))
            proc.send_signal(signal.SIGTERM)
            await ws.wait_closed()
            assert ws.close_code == 1001
        raw, _ = await asyncio.wait_for(proc.communicate(), 30)
        out = raw.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, out
    assert f"ingest listening on ws://127.0.0.1:{port}/stream" in out
    assert "Basic auth is OFF" in out
    audio = await read_audio(kafka_bootstrap, topic_prefix, 10)
    assert [value for _, value, _ in audio] == [pcm(1600, seq) for seq in range(2, 12)]
    calls = await read_calls(kafka_bootstrap, topic_prefix, 2)
    assert [(c.kind, c.stop_reason) for c in calls] == [("start", None), ("stop", "shutdown")]
