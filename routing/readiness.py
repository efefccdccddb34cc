"""Whole-pipeline readiness from the analytics workers' heartbeats on ``agentstream.workers``.

Routing's ``/ready`` answers 200 only when the pipeline can decide:

* this instance rebuilt its decision state (``Router.ready``), and
* the live, ready workers together hold every partition of ``agentstream.audio``.

A worker is live for three of its heartbeat intervals after routing last *received* one (the
receipt time on routing's own clock: hosts' clocks may disagree) and ready when its heartbeat
says so (models loaded, partition assignment held). ``stopping`` removes it at once. A worker that
holds no partition (more workers than partitions) still counts as ready: it is in the group.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from schemas.records import WorkerHeartbeat


@dataclass
class _Seen:
    heartbeat: WorkerHeartbeat
    received_at: float


class WorkerBoard:
    """The latest heartbeat of every worker (each routing instance keeps its own board)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.workers: dict[str, _Seen] = {}

    def note(self, heartbeat: WorkerHeartbeat) -> None:
        if heartbeat.state == "stopping":
            self.workers.pop(heartbeat.worker_id, None)
            return
        self.workers[heartbeat.worker_id] = _Seen(heartbeat, self.clock())

    def live(self) -> list[WorkerHeartbeat]:
        now = self.clock()
        alive = []
        for worker_id, seen in list(self.workers.items()):
            ttl = 3 * seen.heartbeat.interval_ms / 1000
            if now - seen.received_at <= ttl:
                alive.append(seen.heartbeat)
            elif now - seen.received_at > 10 * ttl:
                del self.workers[worker_id]
        return alive

    def status(self) -> dict[str, Any]:
        """``ready`` (the workers cover every audio partition) and what it is made of."""
        live = self.live()
        ready = [hb for hb in live if hb.state == "ready"]
        covered = sorted({p for hb in ready for p in hb.audio_partitions})
        total = max((hb.partitions_total for hb in live), default=0)
        return {
            "ready": bool(ready) and total > 0 and covered == list(range(total)),
            "workers_ready": len(ready),
            "workers_live": len(live),
            "partitions_covered": len(covered),
            "partitions_total": total,
        }


BOARD_KEY = web.AppKey("workers", WorkerBoard)


def readiness(app: web.Application, routing_ready: bool) -> tuple[bool, dict[str, Any]]:
    """``/ready``'s answer: routing's own state, and the workers' when a board is attached."""
    board = app.get(BOARD_KEY)
    if board is None:
        return routing_ready, {"ready": routing_ready, "routing": routing_ready}
    workers = board.status()
    ok = routing_ready and bool(workers["ready"])
    return ok, {"ready": ok, "routing": routing_ready, "pipeline": ok, **_prefixed(workers)}


def _prefixed(status: dict[str, Any]) -> dict[str, Any]:
    return {("workers" if k == "ready" else k): v for k, v in status.items()}
