"""Run several child processes, stop them all together, report the first one that dies."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM us if the supervisor dies (no orphans)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)


class Supervisor:
    """Start children, wait until one exits or a stop is requested, then stop the rest."""

    def __init__(self, stop_timeout_s: float = 10.0) -> None:
        self.children: list[Child] = []
        self.stop_timeout_s = stop_timeout_s
        self._stop = threading.Event()

    def start(self, child: Child) -> None:
        env = dict(os.environ)
        env.update(child.env or {})
        child.proc = subprocess.Popen(  # noqa: S603
            list(child.argv), env=env, preexec_fn=_die_with_parent
        )
        self.children.append(child)
        logger.info("started %s (pid %d)", child.name, child.proc.pid)

    def request_stop(self) -> None:
        self._stop.set()

    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, poll_s: float = 0.2) -> int:
        """Block until stop is requested (exit 0) or a child dies (its exit code, non-zero)."""
        while not self._stop.wait(poll_s):
            for child in self.children:
                assert child.proc is not None
                code = child.proc.poll()
                if code is not None:
                    logger.error("%s exited with code %d; stopping the rest", child.name, code)
                    return code or 1
        return 0

    def stop_all(self) -> None:
        running = [c for c in reversed(self.children) if c.proc and c.proc.poll() is None]
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
