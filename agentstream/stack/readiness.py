"""Waiting until the pipeline can decide: routing's ``/ready`` (which counts the workers'
heartbeats from ``agentstream.workers``) and ingest's ``/health``.

Used by ``agentstream up`` (its ``ready:`` line), :class:`agentstream.stack.local.LocalStack`,
the simulator and ``bench/e2e.py``. Plain ``urllib``: no service is imported.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any


def http_json(url: str, timeout_s: float = 1.0) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a GET (status 0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - ours
            status, raw = int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        status, raw = int(exc.code), exc.read()
    except (urllib.error.URLError, OSError):
        return 0, {}
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        body = {}
    return status, body if isinstance(body, dict) else {}


def pipeline_ready(routing_url: str, workers: int = 1, path: str = "/ready") -> bool:
    """Routing's ``/ready`` is 200 and at least ``workers`` workers are live and ready
    (``path="/health", workers=0``: any service's health)."""
    status, body = http_json(f"{routing_url.rstrip('/')}{path}")
    if status != 200:
        return False
    return workers <= 0 or int(body.get("workers_ready", 0)) >= workers


def wait_pipeline(
    routing_url: str,
    workers: int = 1,
    timeout_s: float = 180.0,
    poll_s: float = 0.25,
    alive: Callable[[], bool] | None = None,
) -> float:
    """Block until :func:`pipeline_ready`; the seconds it took. ``TimeoutError`` otherwise."""
    started = time.monotonic()
    while not pipeline_ready(routing_url, workers):
        if alive is not None and not alive():
            raise TimeoutError("a service exited before the pipeline was ready")
        if time.monotonic() - started > timeout_s:
            _, body = http_json(f"{routing_url.rstrip('/')}/ready")
            raise TimeoutError(f"pipeline not ready within {timeout_s:.0f} s: {body}")
        time.sleep(poll_s)
    return time.monotonic() - started


def local_url(host: str, port: int, scheme: str = "http") -> str:
    """A URL to reach a service listening on ``host`` (a wildcard address means this machine)."""
    reach = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 - a bind address
    return f"{scheme}://{reach}:{port}"


def announce_ready(
    started: float,
    parts: list[str],
    checks: list[Callable[[], bool]],
    stopping: Callable[[], bool],
    say: Callable[[str], None],
    poll_s: float = 0.25,
) -> bool:
    """Poll ``checks`` until all pass, then ``say`` exactly one ``ready:`` line (False if
    ``stopping`` came first). Run in a thread beside the supervisor."""
    while not all(check() for check in checks):
        if stopping():
            return False
        time.sleep(poll_s)
    say(f"ready: {', '.join(parts)} in {time.monotonic() - started:.1f} s: the pipeline can decide")
    return True
