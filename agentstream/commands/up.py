"""``agentstream up``: the embedded broker plus every service, supervised as child processes."""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
import threading
import time
import types
from collections.abc import Callable

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentstream.stack.broker import BrokerError, EmbeddedBroker
from agentstream.stack.readiness import announce_ready, local_url, pipeline_ready
from agentstream.stack.settings import BrokerSettings, UpSettings, count_or_auto, worker_count
from agentstream.stack.supervisor import Child, Supervisor
from agentstream.stack.topics import create_topics
from analytics.settings import WorkerSettings
from ingest.settings import IngestSettings
from routing.settings import RoutingSettings
from schemas.auth import parse_credentials


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("up", help="start the broker and every service; Ctrl-C stops all")
    parser.add_argument(
        "--bootstrap",
        help="use this Kafka instead of starting the embedded broker (KAFKA_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument("--broker-port", type=int, help="embedded broker port (default 9092)")
    parser.add_argument(
        "--workers",
        type=count_or_auto,
        help="analytics worker processes, or 'auto': one per 2 cores (each decodes on 2 threads) "
        "up to the audio topic's partitions (default auto)",
    )
    parser.add_argument(
        "--services",
        help="comma-separated subset of ingest,worker,routing to start ('none': broker only)",
    )
    parser.set_defaults(func=run)


def _service_available(name: str) -> bool:
    return importlib.util.find_spec(f"agentstream.commands.{name}") is not None


SERVICES = ("ingest", "worker", "routing")


def _selected(spec: str | None) -> list[str]:
    wanted = SERVICES if spec is None else tuple(s for s in spec.split(",") if s and s != "none")
    unknown = set(wanted) - set(SERVICES)
    if unknown:
        raise SystemExit(f"error: unknown service(s) {sorted(unknown)}; choose from {SERVICES}")
    return [name for name in wanted if _service_available(name)]


def _worker_metrics_port() -> int:
    return WorkerSettings().metrics_port


def _endpoints(services: list[str], workers: int = 1) -> list[tuple[str, str]]:
    """Where each service listens, read from that service's own settings."""
    lines: list[tuple[str, str]] = []
    if "ingest" in services:
        ing = IngestSettings()
        base = f"{ing.host}:{ing.port}"
        lines.append(("ingest", f"ws://{base}/stream  ws://{base}/voicebot  http://{base}/metrics"))
    if "routing" in services:
        rt = RoutingSettings()
        base = f"http://{rt.host}:{rt.port}"
        lines.append(("routing", f"{base}/exotel/passthru  {base}/exotel/connect  {base}/health"))
        lines.append(("", f"{base}/dashboard  {base}/metrics"))
    if "worker" in services:
        port = _worker_metrics_port()
        ports = ", ".join(str(port + n) for n in range(workers))
        lines.append(("worker", f"/metrics on 127.0.0.1 port {ports}"))
    return lines


class SharedAuth(BaseSettings):
    """``AGENTSTREAM_BASIC_AUTH``: one credential list for ingest and routing (``up`` only)."""

    model_config = SettingsConfigDict(env_prefix="AGENTSTREAM_", frozen=True, extra="ignore")

    basic_auth: SecretStr | None = None


def _auth_env(services: list[str]) -> dict[str, str]:
    """Each service's own ``*_BASIC_AUTH`` from ``AGENTSTREAM_BASIC_AUTH``, unless set itself."""
    shared = SharedAuth().basic_auth
    if shared is None:
        return {}
    value = shared.get_secret_value()
    parse_credentials(value)  # ValueError: reported by run()
    env: dict[str, str] = {}
    if "ingest" in services and IngestSettings().basic_auth is None:
        env["AGENTSTREAM_INGEST_BASIC_AUTH"] = value
    if "routing" in services and RoutingSettings().basic_auth is None:
        env["AGENTSTREAM_ROUTING_BASIC_AUTH"] = value
    return env


def _ready_checks(services: list[str], workers: int) -> tuple[list[str], list[Callable[[], bool]]]:
    """What ``ready:`` waits for: ingest's /health, routing's /ready counting every worker."""
    parts, checks = ["broker"], []
    if "ingest" in services:
        ing = IngestSettings()
        parts.append("ingest")
        checks.append(lambda: pipeline_ready(local_url(ing.host, ing.port), 0, "/health"))
    if "routing" in services:
        rt = RoutingSettings()
        expected = workers if "worker" in services else 0
        if expected:
            parts.append(f"{expected} worker{'s' if expected > 1 else ''}")
        parts.append("routing")
        checks.append(lambda: pipeline_ready(local_url(rt.host, rt.port), expected))
    elif "worker" in services:
        parts.append("workers (not checked without routing)")
    return parts, checks


def run(args: argparse.Namespace) -> int:
    began = time.monotonic()
    up = UpSettings(**({"workers": args.workers} if args.workers else {}))
    services = _selected(args.services)
    try:
        auth_env = _auth_env(services)
    except ValueError as exc:
        print(f"error: AGENTSTREAM_BASIC_AUTH: {exc}", file=sys.stderr)
        return 2
    broker: EmbeddedBroker | None = None
    if args.bootstrap:
        bootstrap = args.bootstrap
    else:
        bs = BrokerSettings(**({"port": args.broker_port} if args.broker_port else {}))
        broker = EmbeddedBroker.from_settings(bs)
        try:
            broker.start()
        except BrokerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        bootstrap = broker.bootstrap
    supervisor = Supervisor(
        stop_timeout_s=up.stop_timeout_s,
        backoff_s=up.restart_backoff_s,
        backoff_max_s=up.restart_backoff_max_s,
        crash_limit=up.crash_loop_limit,
        crash_window_s=up.crash_loop_window_s,
    )
    if broker is not None and broker.process is not None:
        # The embedded broker keeps its data in memory: its death ends the stack (exit != 0).
        supervisor.watch(Child("broker", []), broker.process)

    def _stop(signum: int, frame: types.FrameType | None) -> None:
        supervisor.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    code = 0
    try:
        create_topics(bootstrap)
        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, **auth_env}
        me = [sys.executable, "-m", "agentstream.cli"]
        workers = worker_count(up.workers)
        for name in services:
            count = workers if name == "worker" else 1
            for n in range(count):
                label = f"{name}-{n + 1}" if count > 1 else name
                argv = [*me, name]
                if name == "worker" and count > 1:  # one /metrics port per worker process
                    argv += ["--metrics-port", str(_worker_metrics_port() + n)]
                supervisor.start(Child(label, argv, env))
        print(f"broker   {bootstrap}" + (" (embedded, memory only)" if broker else ""))
        for name, where in _endpoints(services, workers):
            print(f"{name:<8} {where}")
        print("Ctrl-C stops everything; a crashed service is restarted.", flush=True)
        parts, checks = _ready_checks(services, workers)
        threading.Thread(
            target=announce_ready,
            args=(began, parts, checks, supervisor.stopping, lambda s: print(s, flush=True)),
            name="ready",
            daemon=True,
        ).start()
        code = supervisor.wait()
    finally:
        supervisor.stop_all()
        if broker is not None:
            broker.stop()
    return code
