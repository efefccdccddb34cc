"""A worker process with the fake recogniser (tone amplitudes) and the energy-only VAD.

Run as ``python -m tests.integration.asr.asr_worker_main``; configured by the worker's usual
environment (AGENTSTREAM_WORKER_*), so it is the app the real worker builds, minus the models.
``ASR_TEST_VAD=silero`` keeps the real Silero VAD (for tests on real speech).
"""

from __future__ import annotations

import logging
import os

import faust

from analytics.settings import WorkerSettings
from analytics.worker import build_worker
from tests.unit.asr.asr_fakes import FakeRecognizer


def main() -> None:
    settings = WorkerSettings()
    worker = build_worker(
        settings,
        recognizer=FakeRecognizer(max_batch=4),
        use_vad_model=os.environ.get("ASR_TEST_VAD") == "silero",
        with_scoring=False,
    )
    logging.basicConfig(level=logging.INFO)
    faust.Worker(worker.app, loglevel="info", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
