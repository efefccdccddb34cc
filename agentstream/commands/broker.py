"""``agentstream broker``: run the embedded Kafka-compatible broker in the foreground."""

from __future__ import annotations

import argparse
import signal
import types

from agentstream.stack.broker import BrokerError, EmbeddedBroker
from agentstream.stack.settings import BrokerSettings
from agentstream.stack.topics import create_topics


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("broker", help="run the embedded broker (tansu) in the foreground")
    parser.add_argument("--host", help="listen address (AGENTSTREAM_BROKER_HOST)")
    parser.add_argument("--port", type=int, help="listen port (AGENTSTREAM_BROKER_PORT)")
    parser.add_argument(
        "--no-topics", action="store_true", help="do not create the agentstream topics"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    broker = EmbeddedBroker.from_settings(BrokerSettings(**overrides))
    try:
        broker.start()
    except BrokerError as exc:
        print(f"error: {exc}")
        return 2

    def _stop(signum: int, frame: types.FrameType | None) -> None:
        broker.stop()

    signal.signal(signal.SIGTERM, _stop)
    try:
        if not args.no_topics:
            create_topics(broker.bootstrap)
        print(f"broker listening on {broker.bootstrap} (memory only)", flush=True)
        return broker.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()
