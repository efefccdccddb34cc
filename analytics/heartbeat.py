"""The worker's heartbeat: what ``agentstream.workers`` says about this process (no faust).

A worker is ``ready`` once its models are loaded (the ASR service warmed up every inference
thread; the sentiment engine is loaded before the app starts) and the consumer group has given
it an assignment. Routing reads the heartbeats to answer ``/ready`` for the whole pipeline, so
readiness travels through Kafka and works with workers on other hosts.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable

from schemas.records import WorkerHeartbeat


class HeartbeatState:
    """The readiness facts of one worker process; :meth:`record` builds its heartbeat."""

    def __init__(
        self,
        client_id: str,
        app_id: str,
        partitions_total: int,
        interval_s: float,
        models_loaded: Callable[[], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.worker_id = f"{client_id}@{self.host}:{self.pid}"
        self.app_id = app_id
        self.partitions_total = partitions_total
        self.interval_s = interval_s
        self.models_loaded = models_loaded
        self.clock = clock
        self.assigned = False
        self.partitions: list[int] = []
        self.stopping = False

    def on_assignment(self, partitions: Iterable[int]) -> None:
        self.assigned = True
        self.partitions = sorted(set(partitions))

    def record(self) -> WorkerHeartbeat:
        loaded = self.models_loaded()
        if self.stopping:
            state = "stopping"
        elif loaded and self.assigned:
            state = "ready"
        else:
            state = "starting"
        return WorkerHeartbeat(
            worker_id=self.worker_id,
            host=self.host,
            pid=self.pid,
            app_id=self.app_id,
            state=state,
            models_loaded=loaded,
            assigned=self.assigned,
            audio_partitions=self.partitions,
            partitions_total=self.partitions_total,
            interval_ms=int(self.interval_s * 1000),
            sent_at_ms=int(self.clock() * 1000),
        )
