"""The dashboard's HTTP side: the page, its JSON and the server-sent event stream (read-only).

Routes (added to routing's app, behind the same authentication as the Exotel endpoints):
``GET /dashboard`` (the page), ``/dashboard/static/*``, ``/dashboard/events`` (SSE: one
``snapshot`` on connect, then ``update`` events), ``/dashboard/api/calls`` (ranked rows) and
``/dashboard/api/calls/{call_sid}`` (one call's details).

One :class:`Broadcaster` per app ticks the board every ``interval_s``, drains what changed, encodes
it once and hands the same bytes to every open page. A page that cannot keep up (its queue is
full) is disconnected; its EventSource reconnects and starts again from a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from routing.dashboard.board import Board

logger = logging.getLogger(__name__)

QUEUE_LIMIT = 64
_KEEPALIVE_S = 15.0


def sse_event(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class Broadcaster:
    """Ticks the board, drains updates and fans them out to every connected page."""

    def __init__(self, board: Board, interval_s: float = 0.25) -> None:
        self.board = board
        self.interval_s = interval_s
        self._clients: set[asyncio.Queue[bytes | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.sent_updates = 0
        self.last_encode_ms = 0.0

    @property
    def clients(self) -> int:
        return len(self._clients)

    def subscribe(self) -> asyncio.Queue[bytes | None]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_LIMIT)
        self._clients.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._clients.discard(queue)

    def snapshot(self) -> bytes:
        rows = self.board.rows()
        data = {"version": self.board.version, "now_ms": int(time.time() * 1000), "rows": rows}
        return sse_event("snapshot", data)

    def publish_once(self) -> bool:
        """One tick: returns True when an update went out."""
        self.board.tick()
        update = self.board.drain()
        if update is None:
            return False
        started = time.perf_counter()
        payload = sse_event(
            "update",
            {
                "version": update.version,
                "now_ms": update.now_ms,
                "rows": update.rows,
                "touched": update.touched,
                "removed": update.removed,
            },
        )
        self.last_encode_ms = (time.perf_counter() - started) * 1000
        for queue in list(self._clients):
            try:
                queue.put_nowait(payload)
            except asyncio.QueueFull:
                self._clients.discard(queue)
                with contextlib.suppress(asyncio.QueueFull):
                    queue.get_nowait()
                    queue.put_nowait(None)  # tells the handler to close this page's stream
        self.sent_updates += 1
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self._clients:
                self.publish_once()
            else:
                self.board.tick()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dashboard-broadcast")

    async def stop(self) -> None:
        for queue in list(self._clients):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


BROADCASTER_KEY = web.AppKey("dashboard_broadcaster", Broadcaster)
_STATIC = resources.files("routing.dashboard").joinpath("static")
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def _asset(name: str) -> web.Response:
    if "/" in name or name.startswith(".") or not _STATIC.joinpath(name).is_file():
        raise web.HTTPNotFound()
    suffix = name[name.rfind(".") :]
    return web.Response(
        body=_STATIC.joinpath(name).read_bytes(),
        content_type=_TYPES.get(suffix, "application/octet-stream"),
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


async def page(request: web.Request) -> web.StreamResponse:
    if request.path == "/dashboard":  # relative URLs in the page resolve under /dashboard/
        raise web.HTTPFound("/dashboard/")
    return _asset("index.html")


async def static(request: web.Request) -> web.Response:
    return _asset(request.match_info["name"])


async def calls(request: web.Request) -> web.Response:
    board = request.app[BROADCASTER_KEY].board
    return web.json_response({"rows": board.rows()}, dumps=lambda o: orjson.dumps(o).decode())


async def call_detail(request: web.Request) -> web.Response:
    board = request.app[BROADCASTER_KEY].board
    detail = board.detail(request.match_info["call_sid"])
    if detail is None:
        return web.json_response({"error": "no such call on the board", "status": 404}, status=404)
    return web.json_response(detail, dumps=lambda o: orjson.dumps(o).decode())


async def events(request: web.Request) -> web.StreamResponse:
    hub = request.app[BROADCASTER_KEY]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    queue = hub.subscribe()
    try:
        await response.write(b"retry: 2000\n\n" + hub.snapshot())
        while True:
            try:
                payload = await asyncio.wait_for(queue.get(), timeout=_KEEPALIVE_S)
            except TimeoutError:
                payload = b": keepalive\n\n"
            if payload is None:
                break
            await response.write(payload)
    except ConnectionResetError:
        pass  # the page went away
    finally:
        hub.unsubscribe(queue)
    return response


def add_dashboard(app: web.Application, broadcaster: Broadcaster) -> None:
    """Mount the dashboard's routes on ``app``; the broadcaster runs while the app does."""
    app[BROADCASTER_KEY] = broadcaster
    app.router.add_get("/dashboard", page)
    app.router.add_get("/dashboard/", page)
    app.router.add_get("/dashboard/static/{name}", static)
    app.router.add_get("/dashboard/events", events)
    app.router.add_get("/dashboard/api/calls", calls)
    app.router.add_get("/dashboard/api/calls/{call_sid}", call_detail)

    async def _lifecycle(app: web.Application) -> Any:
        broadcaster.start()
        yield
        await broadcaster.stop()

    app.cleanup_ctx.append(_lifecycle)
