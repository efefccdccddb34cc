"""A whole local stack as child processes, for end-to-end tests and ``bench/e2e.py``.

Starts ``agentstream ingest``, N x ``agentstream worker`` and ``agentstream routing`` against a
given Kafka, on free ports, in a private topic namespace and private consumer groups, so several
stacks (or test runs) share one broker without seeing each other. Each child's output goes to a
log file; :meth:`LocalStack.start` returns once every service is ready (ingest ``/health``,
each worker's faust "Ready" log line, and routing's ``/ready``: the whole pipeline, with every
started worker's heartbeat saying its models are loaded and it holds its partitions).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentstream.stack.broker import free_port
from agentstream.stack.readiness import pipeline_ready

logger = logging.getLogger(__name__)

WORKER_READY_MARKERS = ("[^Worker]: Ready", "worker ready")


class StackError(RuntimeError):
    """A service of the local stack did not start."""


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env.update(self.env)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
                self.argv, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout_s: float = 10.0, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to commit, flush or leave its group."""
        self.stop(timeout_s=5.0, sig=signal.SIGKILL)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - local http
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class LocalStack:
    bootstrap: str
    topic_prefix: str
    workers: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    host: str = "127.0.0.1"
    group_suffix: str = ""
    services: list[Service] = field(default_factory=list)
    ingest_port: int = 0
    routing_port: int = 0
    start_timeout_s: float = 90.0

    @property
    def ingest_url(self) -> str:
        return f"ws://{self.host}:{self.ingest_port}"

    @property
    def routing_url(self) -> str:
        return f"http://{self.host}:{self.routing_port}"

    def _env(self) -> dict[str, str]:
        tag = self.group_suffix or self.topic_prefix.strip(".") or "stack"
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",  # each log line reaches its file at once, even at SIGKILL
            "TRANSFORMERS_OFFLINE": "1",
            "AGENTSTREAM_INGEST_HOST": self.host,
            "AGENTSTREAM_INGEST_PORT": str(self.ingest_port),
            "AGENTSTREAM_INGEST_TOPIC_PREFIX": self.topic_prefix,
            "AGENTSTREAM_WORKER_TOPIC_PREFIX": self.topic_prefix,
            "AGENTSTREAM_WORKER_APP_ID": f"agentstream-analytics-{tag}",
            "AGENTSTREAM_WORKER_METRICS_PORT": "0",  # a free port each: stacks run side by side
            "AGENTSTREAM_ROUTING_HOST": self.host,
            "AGENTSTREAM_ROUTING_PORT": str(self.routing_port),
            "AGENTSTREAM_ROUTING_TOPIC_PREFIX": self.topic_prefix,
            "AGENTSTREAM_ROUTING_CONSUMER_GROUP": f"agentstream-routing-{tag}",
            # without workers routing's /ready can only mean its own state
            "AGENTSTREAM_ROUTING_READY_REQUIRES_WORKERS": "true" if self.workers else "false",
        }
        env.update(self.extra_env)
        return env

    def _service(self, name: str, *args: str) -> Service:
        assert self.log_dir is not None
        argv = [sys.executable, "-m", "agentstream.cli", *args]
        return Service(name, argv, self._env(), self.log_dir / f"{name}.log")

    def _worker(self, name: str) -> Service:
        service = self._service(name, "worker")
        # The client id prefixes the group member id, so a member names its process.
        service.env["AGENTSTREAM_WORKER_CLIENT_ID"] = name
        return service

    def add_worker(self, name: str | None = None) -> Service:
        count = sum(1 for s in self.services if s.name.startswith("worker"))
        service = self._worker(name or f"worker-{count + 1}")
        service.start()
        self.services.append(service)
        return service

    def workers_running(self) -> list[Service]:
        return [s for s in self.services if s.name.startswith("worker") and s.alive()]

    def start(self, timeout_s: float = 90.0) -> LocalStack:
        if self.log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix="agentstream-stack-"))
        self.ingest_port = self.ingest_port or free_port(self.host)
        self.routing_port = self.routing_port or free_port(self.host)
        self.services = [
            self._service("routing", "routing"),
            self._service("ingest", "ingest", "--no-create-topics"),
            *(self._worker(f"worker-{n + 1}") for n in range(self.workers)),
        ]
        for service in self.services:
            service.start()
        try:
            self.wait_ready(timeout_s)
        except StackError:
            self.stop()
            raise
        return self

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def worker_ready(self, service: Service) -> bool:
        text = service.log()
        return any(marker in text for marker in WORKER_READY_MARKERS)

    def wait_ready(self, timeout_s: float, services: list[Service] | None = None) -> None:
        checks: dict[str, Callable[[], bool]] = {}
        for service in services or self.services:
            if service.name == "ingest":
                checks[service.name] = lambda: _http_ok(
                    f"http://{self.host}:{self.ingest_port}/health"
                )
            elif service.name == "routing":
                checks[service.name] = lambda: pipeline_ready(
                    self.routing_url, len(self.workers_running())
                )
            else:
                checks[service.name] = lambda s=service: self.worker_ready(s)  # type: ignore[misc]
        pending = dict(checks)
        deadline = time.monotonic() + timeout_s
        while pending:
            for name, check in list(pending.items()):
                if not self.service(name).alive():
                    raise StackError(f"{name} exited at start:\n{self.service(name).log()[-3000:]}")
                if check():
                    del pending[name]
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{self.service(n).log()[-2000:]}" for n in pending)
                raise StackError(f"not ready within {timeout_s}s: {sorted(pending)}\n{logs}")
            time.sleep(0.1)

    def pids(self) -> dict[str, int]:
        return {s.name: s.pid for s in self.services if s.alive()}

    def stop(self) -> None:
        for service in reversed(self.services):
            with contextlib.suppress(OSError):
                service.stop()

    def __enter__(self) -> LocalStack:
        return self.start(self.start_timeout_s)

    def __exit__(self, *exc: object) -> None:
        self.stop()
