"""The ``agentstream`` command line: one entry point, one module per subcommand.

Subcommand modules live in ``agentstream.commands`` and expose ``register(subparsers)``; they
import their service lazily so ``agentstream --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

COMMANDS = (
    "up",
    "broker",
    "topics",
    "ingest",
    "worker",
    "routing",
    "simulate",
    "transcribe",
    "score",
    "tail",
    "query",
    "call",
)


BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentstream",
        description="Real-time call analytics and bot-to-agent routing for Exotel AgentStream.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module_name = f"agentstream.commands.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Models load from local files only: no hub lookups at run time, whoever starts us.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # One BLAS/OpenMP thread per process (before numpy loads): the services get their parallelism
    # from processes and executor threads; OpenBLAS's own helper thread (one per extra core) spun
    # on every small product (Whisper's mel filter bank) and cost a worker ~13 % of its CPU.
    for name in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
