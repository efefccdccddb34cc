"""`agentstream up`: brings the broker up with the topics, says `ready:` once, stops on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agentstream.stack.broker import free_port, port_in_use
from agentstream.stack.supervisor import Child, Supervisor
from agentstream.stack.topics import list_topics
from schemas.topics import ALL_TOPICS
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def _topics_ready(bootstrap: str) -> bool:
    try:
        return {spec.name for spec in ALL_TOPICS} <= set(list_topics(bootstrap))
    except Exception:  # broker not up yet
        return False


def test_up_creates_topics_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentstream.cli",
            "up",
            "--broker-port",
            str(port),
            "--services",
            "none",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: _topics_ready(f"127.0.0.1:{port}"), timeout=20)
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or not (lines[-1].startswith("ready:") or lines[-1] == ""):
            lines.append(proc.stdout.readline())  # "" at EOF: up exited early
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        out = "".join(lines) + out
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"broker   127.0.0.1:{port}" in out
    # broker only: ready as soon as the topics exist, and said exactly once
    ready = [line for line in out.splitlines() if line.startswith("ready:")]
    assert len(ready) == 1 and ready[0].startswith("ready: broker in "), out
    assert not port_in_use("127.0.0.1", port), "broker left running after stop"


def test_up_rejects_unknown_service() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentstream.cli", "up", "--services", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "unknown service" in result.stderr + result.stdout


def test_supervisor_restarts_a_crashing_child_then_reports_its_crash_loop() -> None:
    sup = Supervisor(stop_timeout_s=5, backoff_s=0.05, backoff_max_s=0.05, crash_limit=3)
    sup.start(Child("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"]))
    sup.start(Child("crasher", [sys.executable, "-c", "raise SystemExit(3)"]))
    sleeper = sup.children[0].proc
    try:
        assert sup.wait(poll_s=0.05) == 3
        assert sup.children[1].restarts == 2
        assert sleeper is not None and sleeper.poll() is None, "the others kept running"
    finally:
        sup.stop_all()
    assert all(c.proc is not None and c.proc.poll() is not None for c in sup.children)


def test_supervisor_stop_request_exits_zero() -> None:
    sup = Supervisor(stop_timeout_s=5)
    sup.start(Child("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"]))
    sup.request_stop()
    try:
        assert sup.wait() == 0
    finally:
        sup.stop_all()
    assert sup.children[0].proc is not None
    assert sup.children[0].proc.returncode == -signal.SIGTERM


def _children(pid: int) -> dict[int, str]:
    """The direct children of ``pid``: pid -> command line."""
    found: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:  # the thread ended while we looked (a thread pool's worker)
            continue
        for child in children:
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
                found[int(child)] = cmd.decode(errors="replace")
    return found


def _workers(pid: int) -> set[int]:
    return {
        c
        for c, cmd in _children(pid).items()
        if "agentstream.cli worker" in cmd  # + its options
    }


def test_up_restarts_a_killed_worker_and_keeps_the_stack_and_broker(tmp_path: Path) -> None:
    """`up --workers 2`: SIGKILL one worker; the other and the broker keep running, the killed
    one is started again, and `up` is still up (it stops cleanly on SIGTERM afterwards)."""
    port = free_port()
    env = {
        **os.environ,
        "AGENTSTREAM_UP_RESTART_BACKOFF_S": "0.2",
        "AGENTSTREAM_WORKER_SCORING__ENABLED": "false",
    }
    log = (tmp_path / "up.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentstream.cli", "up", "--broker-port", str(port)]
        + ["--services", "worker", "--workers", "2"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        wait_until(lambda: len(_workers(proc.pid)) == 2, timeout=30)
        first = _workers(proc.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        logged = tmp_path / "up.log"

        def restarted() -> bool:
            # the supervisor's own word first: /proc's child lists can lag or miss a process
            if "restarted worker-" not in logged.read_text(errors="replace"):
                return False
            now = _workers(proc.pid)
            return len(now) == 2 and victim not in now

        wait_until(restarted, 30)
        assert proc.poll() is None, "up stopped when one worker died"
        assert (first - {victim}) <= _workers(proc.pid), "the other worker was restarted too"
        assert _topics_ready(f"127.0.0.1:{port}"), "the broker (and its topics) went away"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "up.log").read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "restarting in" in text and "restarted worker-" in text, text[-3000:]
