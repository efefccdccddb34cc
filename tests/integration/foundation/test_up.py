"""`agentstream up`: brings the broker up with the six topics, stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

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
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"broker   127.0.0.1:{port}" in out
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
