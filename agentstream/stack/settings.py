"""Settings of the embedded broker and the supervisor (``agentstream broker`` / ``up``)."""

from __future__ import annotations

import argparse
import os
from typing import Literal

from pydantic import Field, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import AUDIO


class BrokerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTSTREAM_BROKER_", frozen=True)

    host: str = "127.0.0.1"
    port: int = 9092
    startup_timeout_s: float = 20.0


class UpSettings(BaseSettings):
    """``agentstream up``: which services to start and where they listen."""

    model_config = SettingsConfigDict(env_prefix="AGENTSTREAM_UP_", frozen=True)

    embedded_broker: bool = True
    workers: PositiveInt | Literal["auto"] = Field(
        "auto",
        description="analytics worker processes; auto: one per 2 cores (see worker_count)",
    )
    stop_timeout_s: float = 10.0
    restart_backoff_s: float = 1.0  # first wait before a crashed service is restarted (doubles)
    restart_backoff_max_s: float = 30.0
    crash_loop_limit: int = 5  # this many crashes of one service ...
    crash_loop_window_s: float = 60.0  # ... within this many seconds: give up, exit non-zero


def count_or_auto(text: str) -> int | str:
    """An argparse type: ``auto`` or a positive number (processes of a service)."""
    if text == "auto":
        return text
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive number, got {text!r}")
    return count


def cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


CORES_PER_WORKER = 2  # the worker's default inference threads (``executor_workers``)


def worker_count(
    workers: int | Literal["auto"], available: int | None = None, partitions: int = AUDIO.partitions
) -> int:
    """How many worker processes ``up`` starts.

    ``auto``: one per ``CORES_PER_WORKER`` cores (each worker decodes on that many inference
    threads, with its own models), at least one, and never more than the audio topic has
    partitions (a worker without a partition would sit idle). A number is taken as given.

    Why not one per core: on 2 cores one worker with 2 inference threads held 12 concurrent
    calls where two workers held fewer (speech end to decision p95 at 12 calls 921 vs 1,595 ms,
    at 16 calls 1,608 vs 3,634 ms, with 17-18 % less worker CPU; README "Capacity"). Two workers
    split the calls by a hash of their SID, so one is often loaded twice as much as the other,
    and each pays for its own consumer, VAD and scoring loop.
    """
    if workers == "auto":
        return max(1, min((available or cores()) // CORES_PER_WORKER, partitions))
    return workers
