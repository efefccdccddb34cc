"""``agentstream routing``: the escalation rules service and Exotel's HTTP callbacks."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import uvloop

from routing.settings import RoutingSettings
from schemas.rules import RulesError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "routing", help="evaluate escalation rules and answer Passthru / Connect / status"
    )
    parser.add_argument("--host", help="listen address (AGENTSTREAM_ROUTING_HOST)")
    parser.add_argument("--port", type=int, help="listen port (AGENTSTREAM_ROUTING_PORT)")
    parser.add_argument(
        "--rules", type=Path, help="rules file, YAML or TOML (AGENTSTREAM_ROUTING_RULES_PATH)"
    )
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument(
        "--check", action="store_true", help="validate the rules file, print a summary, exit"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    for name, value in (
        ("host", args.host),
        ("port", args.port),
        ("rules_path", args.rules),
        ("bootstrap_servers", args.bootstrap),
    ):
        if value is not None:
            overrides[name] = value
    settings = RoutingSettings(**overrides)
    try:
        if args.check:
            return _check(settings)
        return _serve(settings)
    except RulesError as exc:
        print(f"error: invalid rules file:\n{exc}", file=sys.stderr)
        return 2


def _check(settings: RoutingSettings) -> int:
    # The service (aiohttp, aiokafka) loads when the command runs: `agentstream --help` stays fast.
    from routing.service import RulesSource

    rules = RulesSource(settings.rules_path).load()
    print(f"rules OK: {settings.rules_path or 'shipped schemas/data/rules.yaml'}")
    print(f"agent groups: {', '.join(rules.agent_groups) or '(none)'}")
    sets = [("default", "default")] + [
        (t, c) for t, tr in rules.tenants.items() for c in (list(tr.campaigns) or ["default"])
    ]
    for tenant, campaign in sets:
        resolved = rules.resolve(tenant, campaign)
        names = ", ".join(f"{r.id}({r.kind}->{r.target})" for r in resolved.rules)
        print(f"{tenant}/{campaign}: {names}")
    return 0


def _serve(settings: RoutingSettings) -> int:
    from routing.service import RoutingService  # loaded on run, like RulesSource above

    async def main() -> int:
        service = RoutingService(settings)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, service.request_reload)
        await service.start()
        base = f"http://{settings.host}:{service.http_port}"
        print(
            f"routing listening on {base}: /exotel/passthru /exotel/connect /exotel/status "
            f"/health /ready /metrics (rules: {settings.rules_path or 'shipped example'}, "
            f"kafka: {settings.bootstrap_servers}, "
            f"auth: {'on' if service.auth.enabled else 'OFF'})",
            flush=True,
        )
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(service.failed.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await service.stop()
        return 1 if service.failed.is_set() else 0

    with contextlib.suppress(KeyboardInterrupt):
        return uvloop.run(main())
    return 130
