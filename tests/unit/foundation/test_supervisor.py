"""Supervisor: restart with backoff, crash loop, critical child; fake children, fake clock."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import types
from itertools import count
from typing import Any

import pytest

from agentstream.stack.supervisor import Child, Process, Supervisor

_pids = count(100)


class FakeProcess:
    def __init__(self) -> None:
        self.pid = next(_pids)
        self.returncode: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.returncode

    def die(self, code: int = -signal.SIGKILL) -> None:
        self.returncode = code

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        self.returncode = -sig

    def wait(self, timeout: float | None = None) -> int:
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        self.die()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, spawned: list[FakeProcess], **kw: float) -> Supervisor:
    def spawn(child: Child) -> Process:
        proc = FakeProcess()
        spawned.append(proc)
        return proc

    return Supervisor(stop_timeout_s=1, clock=clock, spawn=spawn, **kw)  # type: ignore[arg-type]


def test_a_killed_child_is_restarted_after_a_growing_backoff_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, spawned = Clock(), []  # type: ignore[var-annotated]
    sup = make(clock, spawned, backoff_s=1.0, backoff_max_s=3.0, crash_limit=10)
    sup.start(Child("worker-1", ["w"]))
    sup.start(Child("worker-2", ["w"]))
    caplog.set_level(logging.INFO)
    spawned[0].die()
    assert sup.step() is None
    assert len(spawned) == 2  # not at once: after the backoff
    clock.now += 0.9
    assert sup.step() is None and len(spawned) == 2
    clock.now += 0.2
    assert sup.step() is None and len(spawned) == 3
    assert sup.children[0].proc is spawned[2] and sup.children[0].restarts == 1
    assert spawned[1].poll() is None, "the other worker kept running"
    # second crash: 2 s, third: 3 s (capped)
    for delay in (2.0, 3.0, 3.0):
        spawned[-1].die(1)
        sup.step()
        clock.now += delay - 0.01
        before = len(spawned)
        sup.step()
        assert len(spawned) == before
        clock.now += 0.02
        sup.step()
        assert len(spawned) == before + 1
    text = caplog.text
    assert "worker-1 exited with code -9; restarting in 1.0 s" in text
    assert "restarted worker-1" in text


def test_a_crash_loop_gives_up_with_a_non_zero_code(caplog: pytest.LogCaptureFixture) -> None:
    clock, spawned = Clock(), []  # type: ignore[var-annotated]
    sup = make(clock, spawned, backoff_s=0.5, backoff_max_s=0.5, crash_limit=5, crash_window_s=60)
    sup.start(Child("ingest", ["i"]))
    codes = []
    for _ in range(5):
        spawned[-1].die(3)
        codes.append(sup.step())
        clock.now += 1.0
        sup.step()  # restart
    assert codes == [None, None, None, None, 3]
    assert "crash loop" in caplog.text


def test_crashes_spread_over_more_than_the_window_are_not_a_loop() -> None:
    clock, spawned = Clock(), []  # type: ignore[var-annotated]
    sup = make(clock, spawned, backoff_s=0.5, backoff_max_s=0.5, crash_limit=3, crash_window_s=60)
    sup.start(Child("routing", ["r"]))
    for _ in range(10):
        spawned[-1].die(0)  # even a clean exit of a service is unexpected: restart it
        assert sup.step() is None
        clock.now += 31
        assert sup.step() is None
    assert sup.children[0].restarts == 10


def test_a_critical_child_dying_stops_everything_and_is_not_restarted() -> None:
    clock, spawned = Clock(), []  # type: ignore[var-annotated]
    sup = make(clock, spawned)
    broker = FakeProcess()
    sup.watch(Child("broker", []), broker)
    sup.start(Child("worker", ["w"]))
    assert sup.step() is None
    broker.die(-signal.SIGKILL)
    assert sup.step() == -signal.SIGKILL
    sup.stop_all()
    assert spawned[0].signals == [signal.SIGTERM]
    assert broker.signals == [], "the broker is stopped by its owner, not the supervisor"


def test_a_stop_request_ends_wait_with_zero() -> None:
    clock, spawned = Clock(), []  # type: ignore[var-annotated]
    sup = make(clock, spawned)
    sup.start(Child("worker", ["w"]))
    sup.request_stop()
    assert sup.wait(poll_s=0.01) == 0
    sup.stop_all()
    assert spawned[0].returncode == -signal.SIGTERM


def test_a_stop_request_interrupted_by_another_does_not_deadlock() -> None:
    """What `up` meets when a second SIGINT/SIGTERM lands while its handler runs: a request
    made between any two lines of another (as a signal handler would) must not block."""
    sup = make(Clock(), [])
    nested: list[str] = []

    def tracer(frame: types.FrameType, event: str, arg: object) -> Any:
        if event == "line":  # a "signal" here: the handler asks again (tracing is off inside)
            nested.append(frame.f_code.co_name)
            sup.request_stop()
        return tracer

    def first_request() -> None:
        sys.settrace(tracer)
        try:
            sup.request_stop()
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=first_request, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "a stop request interrupted by another deadlocked"
    assert nested and sup.stopping()
