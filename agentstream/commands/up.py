"""``agentstream up``: the embedded broker plus every service, supervised as child processes."""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
import types

from agentstream.stack.broker import BrokerError, EmbeddedBroker
from agentstream.stack.settings import BrokerSettings, UpSettings
from agentstream.stack.supervisor import Child, Supervisor
from agentstream.stack.topics import create_topics
from ingest.settings import IngestSettings
from routing.settings import RoutingSettings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("up", help="start the broker and every service; Ctrl-C stops all")
    parser.add_argument(
        "--bootstrap",
        help="use this Kafka instead of starting the embedded broker (KAFKA_BOOTSTRAP_SERVERS)",
    )
    parser.add_argument("--broker-port", type=int, help="embedded broker port (default 9092)")
    parser.add_argument("--workers", type=int, help="analytics worker processes (default 1)")
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


def _endpoints(services: list[str]) -> list[tuple[str, str]]:
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
    return lines


def run(args: argparse.Namespace) -> int:
    up = UpSettings(**({"workers": args.workers} if args.workers else {}))
    services = _selected(args.services)
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
        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap}
        me = [sys.executable, "-m", "agentstream.cli"]
        for name in services:
            count = up.workers if name == "worker" else 1
            for n in range(count):
                label = f"{name}-{n + 1}" if count > 1 else name
                supervisor.start(Child(label, [*me, name], env))
        print(f"broker   {bootstrap}" + (" (embedded, memory only)" if broker else ""))
        for name, where in _endpoints(services):
            print(f"{name:<8} {where}")
        print("Ctrl-C stops everything; a crashed service is restarted.", flush=True)
        code = supervisor.wait()
    finally:
        supervisor.stop_all()
        if broker is not None:
            broker.stop()
    return code
