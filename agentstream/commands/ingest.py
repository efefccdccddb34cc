"""``agentstream ingest``: run the Exotel WebSocket ingest server (uvloop) until SIGTERM/Ctrl-C.

With ``--processes N`` (N > 1) this process only supervises: it creates the topics once and
runs N ingest processes that share the port (SO_REUSEPORT; :mod:`agentstream.stack.replicas`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys

import uvloop
from kafka.errors import KafkaError
from pydantic import ValidationError

from agentstream.stack.settings import count_or_auto
from agentstream.stack.topics import create_topics
from ingest.settings import MAX_AUTO_PROCESSES, IngestSettings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "ingest",
        help="run the Exotel Stream/Voicebot WebSocket server",
        description="Run the Exotel Stream/Voicebot WebSocket server. With --processes N > 1, "
        "N server processes share the port (SO_REUSEPORT, the kernel spreads connections) "
        "under a supervisor that restarts one that dies; each takes ceil(MAX_CALLS / N) calls "
        "and, with AGENTSTREAM_INGEST_CHILD_METRICS_PORT=P, answers /health and /metrics on "
        "port P + i as well (see docs/ingest.md).",
    )
    parser.add_argument("--host", help="listen address (AGENTSTREAM_INGEST_HOST, 0.0.0.0)")
    parser.add_argument("--port", type=int, help="listen port (AGENTSTREAM_INGEST_PORT, 8080)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument(
        "--processes",
        type=count_or_auto,
        metavar="N|auto",
        help="server processes sharing the port, or 'auto': one per core, at most "
        f"{MAX_AUTO_PROCESSES} (AGENTSTREAM_INGEST_PROCESSES, 1 = one process, no supervisor)",
    )
    parser.add_argument(
        "--no-create-topics", action="store_true", help="do not create missing topics at start"
    )
    # set by the supervisor of --processes N for each child
    parser.add_argument("--process-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The server (websockets, aiokafka) loads only when it runs: `agentstream --help` stays fast.
    overrides = {
        name: value
        for name, value in (
            ("host", args.host),
            ("port", args.port),
            ("bootstrap_servers", args.bootstrap),
            ("processes", getattr(args, "processes", None)),
            ("process_index", getattr(args, "process_index", None)),
        )
        if value is not None
    }
    try:
        settings = IngestSettings(**overrides)
    except ValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.no_create_topics:
        try:
            create_topics(settings.bootstrap_servers, settings.topic_prefix)
        except (KafkaError, OSError) as exc:
            print(f"warning: could not create topics on {settings.bootstrap_servers}: {exc}")
    count = settings.process_count()
    if settings.process_index is None and count > 1:
        return _supervise(settings, count, args)
    if settings.process_index is not None:
        _tag_logs(settings.process_index)
    return _serve(settings, getattr(args, "ready_fd", None))


def _serve(settings: IngestSettings, ready_fd: int | None) -> int:
    from ingest.server import serve_forever
    from ingest.sink import SinkError

    def ready() -> None:
        if ready_fd is not None:  # tell the supervisor we listen
            with contextlib.suppress(OSError):
                os.write(ready_fd, b"ready\n")
            with contextlib.suppress(OSError):
                os.close(ready_fd)

    async def main() -> int:
        # startup objects (modules, models, settings) never die: keep them out of GC scans
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await serve_forever(settings, stop, ready)
        except SinkError as exc:
            print(f"error: {exc}", flush=True)
            return 2
        except OSError as exc:
            print(f"error: cannot listen on {settings.host}:{settings.port}: {exc}", flush=True)
            return 2
        return 0

    return uvloop.run(main())


def _supervise(settings: IngestSettings, count: int, args: argparse.Namespace) -> int:
    from agentstream.stack.replicas import Replicas

    if settings.port == 0:
        print("error: --processes > 1 needs a fixed port (they share it)", file=sys.stderr)
        return 2
    base = settings.child_metrics_port
    if base and base + count - 1 > 65535:
        print(
            f"error: child metrics ports {base}..{base + count - 1} exceed 65535", file=sys.stderr
        )
        return 2
    argv = [sys.executable, "-m", "agentstream.cli"]
    argv += ["--log-level", str(getattr(args, "log_level", "INFO")), "ingest", "--no-create-topics"]
    for flag, value in (
        ("--host", args.host),
        ("--port", args.port),
        ("--bootstrap", args.bootstrap),
    ):
        if value is not None:
            argv += [flag, str(value)]
    where = f"ws://{settings.host}:{settings.port}"
    ports = f"; /health and /metrics per process on :{base}..{base + count - 1}" if base else ""
    print(
        f"ingest: {count} processes on {where}/stream and /voicebot, up to "
        f"{settings.calls_each(count)} calls each"
        f"{ports}",
        flush=True,
    )
    replicas = Replicas(
        "ingest",
        argv,
        count,
        {"AGENTSTREAM_INGEST_PROCESSES": str(count)},
        # each child closes its calls, then flushes Kafka, each within shutdown_timeout_s
        stop_timeout_s=2 * settings.shutdown_timeout_s + 5,
        startup_timeout_s=settings.connect_timeout_s + 30,
    )
    return replicas.run()


def _tag_logs(index: int) -> None:
    """Prefix this process's log lines with its index: N processes share one stderr."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s [ingest-{index}] %(name)s %(message)s")
        )
