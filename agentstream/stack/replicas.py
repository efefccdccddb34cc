"""N copies of one service process sharing a listening port (SO_REUSEPORT), supervised.

``agentstream ingest --processes N`` runs :class:`Replicas` in the parent process: it starts N
children (the service's command line plus ``--process-index i --ready-fd FD``), waits until each
writes ``ready`` to its pipe (it listens), then hands them to
:class:`~agentstream.stack.supervisor.Supervisor`: a child that dies is restarted with backoff
while the others keep serving, a crash loop ends everything (exit 1), and SIGTERM/SIGINT are
passed on as SIGTERM, each child's graceful shutdown waited for. A child that cannot start at all
(port in use, Kafka unreachable) is not retried: the others are stopped and :meth:`Replicas.run`
returns 2 at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
import types
from collections.abc import Mapping, Sequence

from agentstream.stack.supervisor import Child, Process, Supervisor, spawn_process

logger = logging.getLogger(__name__)

READY = b"ready"
# A child stopped by our SIGTERM (or the terminal's SIGINT) before it set up its handlers had
# nothing to flush: that exit is as clean as 0.
_CLEAN_EXITS = (0, -signal.SIGTERM, -signal.SIGINT)


class Replicas:
    """Start ``count`` children of ``argv``, supervise them, stop them on SIGTERM/SIGINT."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        count: int,
        env: Mapping[str, str] | None = None,
        *,
        stop_timeout_s: float = 30.0,
        startup_timeout_s: float = 120.0,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        crash_limit: int = 5,
        crash_window_s: float = 60.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.count = count
        self.env = dict(env or {})
        self.startup_timeout_s = startup_timeout_s
        self.supervisor = Supervisor(
            stop_timeout_s,
            backoff_s=backoff_s,
            backoff_max_s=backoff_max_s,
            crash_limit=crash_limit,
            crash_window_s=crash_window_s,
            spawn=self._spawn,
        )
        self._pipes: dict[str, int] = {}  # child name -> read end of its ready pipe (startup)
        self._starting = True

    def run(self) -> int:
        """0 after a stop request with every child stopped cleanly; 2 if a child could not
        start; 1 on a crash loop or a child that did not stop cleanly."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        code = 1
        try:
            code = self._start_and_watch()
        finally:
            clean = self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code if code or clean else 1

    # --- internals ----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
        self.supervisor.request_stop()

    def _spawn(self, child: Child) -> Process:
        if not self._starting:  # a restart: the supervisor's log says how it went
            return spawn_process(child)
        read_fd, write_fd = os.pipe()
        try:
            argv = [*child.argv, "--ready-fd", str(write_fd)]
            proc = spawn_process(Child(child.name, argv, child.env), pass_fds=(write_fd,))
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._pipes[child.name] = read_fd
        return proc

    def _start_and_watch(self) -> int:
        sup = self.supervisor
        for index in range(self.count):
            argv = [*self.argv, "--process-index", str(index)]
            sup.start(Child(f"{self.name}-{index}", argv, self.env))
        failed = self._await_ready()
        self._starting = False
        if failed:
            print(
                f"error: {self.name}: {failed} could not start; stopping the others "
                "(its own error is above)",
                file=sys.stderr,
                flush=True,
            )
            return 2
        if sup.stopping():
            return 0
        pids = ", ".join(str(c.proc.pid) for c in sup.children if c.proc is not None)
        print(f"{self.name}: {self.count} processes ready (pids {pids})", flush=True)
        if sup.wait():
            return 1  # a crash loop: the supervisor logged which child and why
        return 0

    def _await_ready(self) -> str | None:
        """Wait until every child wrote ``ready``; the first one that did not (it exited, or
        stayed silent past the startup timeout), or None."""
        pending = {self._pipes.pop(c.name): c for c in self.supervisor.children}
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            while pending and not self.supervisor.stopping():
                left = deadline - time.monotonic()
                if left <= 0:
                    child = next(iter(pending.values()))
                    return f"{child.name} (not ready within {self.startup_timeout_s:.0f} s)"
                readable, _, _ = select.select(list(pending), [], [], min(0.2, left))
                for fd in readable:
                    child = pending.pop(fd)
                    data = os.read(fd, 64)
                    os.close(fd)
                    if not data.startswith(READY):  # end of file: it exited before listening
                        return f"{child.name} (exit code {_exit_code(child)})"
                    logger.info("%s ready (pid %d)", child.name, _pid(child))
        finally:
            for fd in pending:
                os.close(fd)
        return None

    def _stop_all(self) -> bool:
        """SIGTERM every running child and wait for it; True if each stopped cleanly."""
        running = [
            c for c in self.supervisor.children if c.proc is not None and c.proc.poll() is None
        ]
        self.supervisor.stop_all()
        for fd in self._pipes.values():
            os.close(fd)
        self._pipes.clear()
        unclean = [
            f"{c.name} ({c.proc.returncode})"
            for c in running
            if c.proc is not None and c.proc.returncode not in _CLEAN_EXITS
        ]
        if unclean:
            logger.error("%s did not stop cleanly: %s", self.name, ", ".join(unclean))
        return not unclean


def _pid(child: Child) -> int:
    return child.proc.pid if child.proc is not None else -1


def _exit_code(child: Child) -> int | str:
    if child.proc is None:
        return "?"
    with contextlib.suppress(subprocess.TimeoutExpired):
        return child.proc.wait(timeout=10)
    return "? (still running)"
