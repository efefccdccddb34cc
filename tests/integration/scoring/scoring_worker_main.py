"""A worker process running only the scoring agent (VADER engine), for the restart tests.

Run as ``python -m tests.integration.scoring.scoring_worker_main``; configured by the worker's
usual environment (AGENTSTREAM_WORKER_*), so it is the same app the real worker builds.
"""

from __future__ import annotations

import logging

import faust

from analytics.app import make_app
from analytics.scoring.agent import attach_scoring
from analytics.settings import WorkerSettings
from schemas.rules import RulesFile


def main() -> None:
    settings = WorkerSettings()
    app = make_app(settings)
    attach_scoring(app, settings=settings.scoring, kafka=settings, rules=RulesFile())
    logging.basicConfig(level=logging.INFO)
    worker = faust.Worker(app, loglevel="info", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
