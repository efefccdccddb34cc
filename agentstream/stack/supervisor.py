"""Run the services as child processes: restart one that dies, with backoff; give up (and stop
them all) only when one crash-loops or a critical child (the embedded broker) dies.

A child that exits, whatever its code, is restarted after ``backoff_s`` doubling per crash
(capped at ``backoff_max_s``), and every restart is logged. ``crash_limit`` crashes of one child
within ``crash_window_s`` is a crash loop: :meth:`Supervisor.wait` returns non-zero. A critical
child is never restarted: the embedded broker keeps its data in memory, so its death ends the
stack. :meth:`Supervisor.step` is one pass, driven by tests with fake children and a fake clock.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM us if the supervisor dies (no orphans)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Process(Protocol):
    """What the supervisor needs of a child process (``subprocess.Popen`` or a test fake)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


def spawn_process(child: Child, pass_fds: Sequence[int] = ()) -> Process:
    """Start ``child`` (dies with us); ``pass_fds`` stay open in it (a readiness pipe)."""
    env = dict(os.environ)
    env.update(child.env or {})
    return subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
        list(child.argv), env=env, preexec_fn=_die_with_parent, pass_fds=tuple(pass_fds)
    )


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    critical: bool = False  # its death stops the stack (never restarted)
    proc: Process | None = field(default=None, init=False)
    crashes: deque[float] = field(default_factory=deque, init=False)
    restart_at: float | None = field(default=None, init=False)
    restarts: int = field(default=0, init=False)


class Supervisor:
    """Start children, restart those that die, stop them all on request (see module)."""

    def __init__(
        self,
        stop_timeout_s: float = 10.0,
        *,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        crash_limit: int = 5,
        crash_window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        spawn: Callable[[Child], Process] = spawn_process,
    ) -> None:
        self.children: list[Child] = []
        self.stop_timeout_s = stop_timeout_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.crash_limit = crash_limit
        self.crash_window_s = crash_window_s
        self.clock = clock
        self._spawn = spawn
        # a plain flag, not a threading.Event: request_stop runs in signal handlers, and a second
        # SIGINT/SIGTERM landing while Event.set() holds its lock deadlocked `up` (seen: Ctrl-C,
        # or `timeout` forwarding a signal to the process and its group)
        self._stop_requested = False

    def start(self, child: Child) -> None:
        child.proc = self._spawn(child)
        self.children.append(child)
        logger.info("started %s (pid %d)", child.name, child.proc.pid)

    def watch(self, child: Child, proc: Process) -> None:
        """Supervise a process started elsewhere (the embedded broker): critical, not restarted."""
        child.proc = proc
        child.critical = True
        self.children.append(child)

    def request_stop(self) -> None:
        """Safe in a signal handler, even one that interrupts another: takes no lock."""
        self._stop_requested = True

    def stopping(self) -> bool:
        return self._stop_requested

    def wait(self, poll_s: float = 0.2) -> int:
        """Block until stop is requested (0), a child crash-loops or a critical one dies."""
        while not self._stop_requested:
            code = self.step()
            if code is not None:
                return code
            time.sleep(poll_s)  # a stop request is seen within poll_s
        return 0

    def step(self) -> int | None:
        """One pass: note exits, schedule and perform restarts; an exit code to give up with."""
        now = self.clock()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restart_at = None
                    child.proc = self._spawn(child)
                    child.restarts += 1
                    logger.warning(
                        "restarted %s (pid %d, restart %d)",
                        child.name,
                        child.proc.pid,
                        child.restarts,
                    )
                continue
            if child.proc is None:
                continue
            code = child.proc.poll()
            if code is None:
                continue
            given_up = self._crashed(child, code, now)
            if given_up is not None:
                return given_up
        return None

    def _crashed(self, child: Child, code: int, now: float) -> int | None:
        if child.critical:
            logger.error("%s exited with code %d; stopping everything", child.name, code)
            return code or 1
        child.crashes.append(now)
        while child.crashes and child.crashes[0] < now - self.crash_window_s:
            child.crashes.popleft()
        count = len(child.crashes)
        if count >= self.crash_limit:
            logger.error(
                "%s crashed %d times in %.0f s (last exit code %d): crash loop, stopping "
                "everything",
                child.name,
                count,
                self.crash_window_s,
                code,
            )
            return code or 1
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** (count - 1))
        child.restart_at = now + delay
        logger.error(
            "%s exited with code %d; restarting in %.1f s (crash %d of %d allowed in %.0f s)",
            child.name,
            code,
            delay,
            count,
            self.crash_limit - 1,
            self.crash_window_s,
        )
        return None

    def stop_all(self) -> None:
        running = [
            c
            for c in reversed(self.children)
            if not c.critical and c.proc and c.proc.poll() is None
        ]
        for child in running:
            assert child.proc is not None
            child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for child in running:
            assert child.proc is not None
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in time; killing it", child.name)
                child.proc.kill()
                child.proc.wait()
