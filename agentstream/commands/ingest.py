"""``agentstream ingest``: run the Exotel WebSocket ingest server (uvloop) until SIGTERM/Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal

import uvloop
from kafka.errors import KafkaError

from agentstream.stack.topics import create_topics
from ingest.settings import IngestSettings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("ingest", help="run the Exotel Stream/Voicebot WebSocket server")
    parser.add_argument("--host", help="listen address (AGENTSTREAM_INGEST_HOST, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="listen port (AGENTSTREAM_INGEST_PORT, 8080)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument(
        "--no-create-topics", action="store_true", help="do not create missing topics at start"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The server (websockets, aiokafka) loads only when it runs: `agentstream --help` stays fast.
    from ingest.server import serve_forever
    from ingest.sink import SinkError

    overrides = {
        name: value
        for name, value in (
            ("host", args.host),
            ("port", args.port),
            ("bootstrap_servers", args.bootstrap),
        )
        if value is not None
    }
    settings = IngestSettings(**overrides)
    if not args.no_create_topics:
        try:
            create_topics(settings.bootstrap_servers, settings.topic_prefix)
        except (KafkaError, OSError) as exc:
            print(f"warning: could not create topics on {settings.bootstrap_servers}: {exc}")

    async def main() -> int:
        # startup objects (modules, models, settings) never die: keep them out of GC scans
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve_forever(settings, stop)
        except SinkError as exc:
            print(f"error: {exc}", flush=True)
            return 2
        except OSError as exc:
            print(f"error: cannot listen on {settings.host}:{settings.port}: {exc}", flush=True)
            return 2
        return 0

    return uvloop.run(main())
