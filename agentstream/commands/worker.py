"""``agentstream worker``: one analytics worker process (transcription + scoring agents).

Run several to scale out: processes with the same app id form one consumer group and share
the audio/transcript partitions. Settings: ``AGENTSTREAM_WORKER_*`` (see analytics/settings.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("worker", help="run an analytics worker (ASR + scoring)")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument(
        "--engine", choices=["whisper", "vosk"], help="ASR engine (AGENTSTREAM_WORKER_ASR_ENGINE)"
    )
    parser.add_argument("--model", help="model directory for the chosen engine")
    parser.add_argument("--executor-workers", type=int, help="inference threads (one model each)")
    parser.add_argument("--web-port", type=int, help="enable faust's web server on this port")
    parser.add_argument("--no-scoring", action="store_true", help="transcription only")
    parser.add_argument(
        "--metrics-port", type=int, help="Prometheus /metrics port, 0 = a free one (default 9102)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The worker stack (faust, torch, the recogniser) loads only when this command runs, so
    # `agentstream --help` and the other commands stay fast.
    import faust

    from analytics.asr.base import AsrError
    from analytics.delivery import idempotence_allowed
    from analytics.settings import WorkerSettings
    from analytics.worker import build_worker

    overrides: dict[str, object] = {}
    if args.bootstrap:
        overrides["bootstrap_servers"] = args.bootstrap
    if args.engine:
        overrides["asr_engine"] = args.engine
    if args.executor_workers:
        overrides["executor_workers"] = args.executor_workers
    if args.metrics_port is not None:
        overrides["metrics_port"] = args.metrics_port
    if args.web_port:
        overrides["web_enabled"] = True
        overrides["web_port"] = args.web_port
    if args.model:
        engine = args.engine or WorkerSettings().asr_engine
        overrides["vosk_model_path" if engine == "vosk" else "whisper_model_path"] = args.model
    settings = WorkerSettings(**overrides)  # type: ignore[arg-type]
    idempotent = asyncio.run(
        idempotence_allowed(
            settings.bootstrap_servers, settings.client_id, settings.producer_idempotence
        )
    )
    try:
        worker = build_worker(
            settings, with_scoring=False if args.no_scoring else None, idempotent=idempotent
        )
    except AsrError as exc:
        print(f"error: {exc}")
        return 2
    if settings.metrics_enabled:
        try:
            server, _ = worker.metrics.serve(settings.metrics_host, settings.metrics_port)
        except OSError as exc:  # a second worker on the same host: run on, without metrics
            logger.warning(
                "metrics off: cannot listen on %s:%s: %s",
                settings.metrics_host,
                settings.metrics_port,
                exc,
            )
        else:
            logger.info(
                "metrics on http://%s:%d/metrics", settings.metrics_host, server.server_port
            )
    faust_worker = faust.Worker(
        worker.app, loglevel=str(args.log_level).lower(), quiet=True, redirect_stdouts=False
    )
    faust_worker.execute_from_commandline()
    return 0
