"""aiohttp handlers for Exotel's callbacks (Passthru, Connect, StatusCallback) and operations.

Thin: parameters are read from the query, a form or a JSON body (``schemas.callbacks``), the
answer comes from the :class:`~routing.router.Router`'s memory, and every callback's parameters
are recorded on ``agentstream.calls``. Bad input gets a 4xx JSON error, never a 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from routing.connect import connect_answer
from routing.dashboard.http import BROADCASTER_KEY, Broadcaster, add_dashboard
from routing.router import Router
from schemas.basic_auth import authorized
from schemas.callbacks import CallbackParams, flatten, parse_callback, parse_json_body
from schemas.errors import ProtocolError
from schemas.records import CallEvent

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
ROUTER_KEY = web.AppKey("router", Router)
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# What Basic auth guards (when configured): Exotel's callbacks and the dashboard. Health,
# readiness and metrics stay open for probes and Prometheus.
PROTECTED_PREFIXES = ("/exotel/", "/dashboard")


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message, "status": status}, status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProtocolError as exc:
        logger.info("bad callback %s %s: %s", request.method, request.path, exc.reason)
        return _error(400, exc.reason)
    except (ValidationError, UnicodeDecodeError, ValueError) as exc:
        logger.info("bad callback %s %s: %s", request.method, request.path, exc)
        return _error(400, f"malformed parameters: {exc}".splitlines()[0][:300])
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)


def _basic_auth(credentials: dict[str, str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PROTECTED_PREFIXES) and not authorized(
            request.headers.get("Authorization"), credentials
        ):
            logger.warning(
                "refused %s %s: missing or wrong Basic auth", request.method, request.path
            )
            response = _error(401, "missing or wrong credentials")
            response.headers["WWW-Authenticate"] = 'Basic realm="agentstream"'
            return response
        return await handler(request)

    return check


async def read_params(request: web.Request) -> dict[str, str]:
    """Every parameter of a callback: body (JSON or form) first, then the query string."""
    items: list[tuple[str, Any]] = []
    if request.method == "POST":
        body = await request.read()
        ctype = request.content_type
        if ctype == "application/json" or (
            ctype not in _FORM_TYPES and body.lstrip().startswith(b"{")
        ):
            items.extend(parse_json_body(body).items())
        elif ctype in _FORM_TYPES:
            form = await request.post()
            items.extend((k, v) for k, v in form.items() if isinstance(v, str))
        elif body.strip():
            items.extend(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    items.extend(request.query.items())
    return flatten(items)


async def _callback(request: web.Request) -> CallbackParams:
    return parse_callback(await read_params(request))


def _record(
    router: Router,
    kind: str,
    params: CallbackParams,
    answer: str,
    answer_complete: bool | None = None,
) -> None:
    if not router.record_callbacks or not params.call_sid:
        return
    view = router.book.get(params.call_sid)
    router.publisher.publish_call_event(
        CallEvent(
            kind=kind,  # type: ignore[arg-type]
            call_sid=params.call_sid,
            stream_sid=params.stream.stream_sid or (view.stream_sid if view else ""),
            tenant=view.tenant if view else "default",
            campaign=view.campaign if view else "default",
            occurred_at_ms=int(router.clock() * 1000),
            params=params.raw,
            answer=answer,
            answer_complete=answer_complete,
        )
    )


async def passthru(request: web.Request) -> web.Response:
    router = request.app[ROUTER_KEY]
    started = time.perf_counter()
    params = await _callback(request)
    if not params.call_sid:
        raise ProtocolError("CallSid is missing")
    result = await router.passthru(params.call_sid, params.digits)
    _record(router, "passthru", params, str(result.status), result.complete)
    router.metrics.callbacks.labels("passthru", result.outcome).inc()
    router.metrics.passthru_answers.labels("true" if result.complete else "false").inc()
    router.metrics.callback_seconds.labels("passthru").observe(time.perf_counter() - started)
    escalation = result.view.escalation if result.view else None
    return _json(
        {
            "call_sid": params.call_sid,
            "decision": result.outcome,
            "rule_id": escalation.rule_id if escalation else None,
            "target_group": escalation.target_group if escalation else None,
            "waited_ms": round(result.waited_ms, 1),
        },
        result.status,
    )


async def connect(request: web.Request) -> web.Response:
    router = request.app[ROUTER_KEY]
    started = time.perf_counter()
    params = await _callback(request)
    if not params.call_sid:
        raise ProtocolError("CallSid is missing")
    view = router.book.get(params.call_sid)
    decision = view.escalation if view else None
    found = router.rules.agent_group(decision.target_group if decision else None)
    if found is None:
        router.metrics.callbacks.labels("connect", "no_group").inc()
        return _error(404, "no agent group is configured in the rules file")
    name, group = found
    if decision is None:
        logger.warning("connect for %s, which was not escalated: group %s", params.call_sid, name)
    _record(router, "connect", params, name)
    router.metrics.callbacks.labels("connect", "escalated" if decision else "default").inc()
    router.metrics.callback_seconds.labels("connect").observe(time.perf_counter() - started)
    return web.Response(
        body=connect_answer(group, decision).to_json(), content_type="application/json"
    )


async def status(request: web.Request) -> web.Response:
    router = request.app[ROUTER_KEY]
    started = time.perf_counter()
    params = await _callback(request)
    if not params.call_sid:
        raise ProtocolError("CallSid is missing")
    _record(router, "status", params, "ok")
    router.metrics.callbacks.labels("status", params.status or "unknown").inc()
    router.metrics.callback_seconds.labels("status").observe(time.perf_counter() - started)
    return _json({"ok": True, "call_sid": params.call_sid})


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    router = request.app[ROUTER_KEY]
    if router.ready:
        return _json({"ready": True, "calls": len(router.book.calls)})
    return _json({"ready": False, "reason": "rebuilding decision state"}, 503)


async def metrics(request: web.Request) -> web.Response:
    router = request.app[ROUTER_KEY]
    router.metrics.calls_tracked.set(len(router.book.calls))
    router.metrics.ready.set(1 if router.ready else 0)
    if BROADCASTER_KEY in request.app:
        router.metrics.dashboard_clients.set(request.app[BROADCASTER_KEY].clients)
    return web.Response(
        body=generate_latest(router.metrics.registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


def create_app(
    router: Router,
    credentials: dict[str, str] | None = None,
    dashboard: Broadcaster | None = None,
) -> web.Application:
    """Exotel's callbacks and the operations endpoints; with ``credentials``, Basic auth on
    ``/exotel/*`` and ``/dashboard*``; with ``dashboard``, the supervisor dashboard."""
    middlewares = [_basic_auth(credentials)] if credentials else []
    app = web.Application(middlewares=[*middlewares, _errors], client_max_size=MAX_BODY_BYTES)
    app[ROUTER_KEY] = router
    for path, handler in (
        ("/exotel/passthru", passthru),
        ("/exotel/connect", connect),
        ("/exotel/status", status),
    ):
        app.router.add_get(path, handler)
        app.router.add_post(path, handler)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    if dashboard is not None:
        add_dashboard(app, dashboard)
    return app


async def start_http_app(
    router: Router,
    host: str,
    port: int,
    credentials: dict[str, str] | None = None,
    dashboard: Broadcaster | None = None,
) -> tuple[web.AppRunner, int]:
    """Start the app on ``host:port``; the runner (for cleanup) and the port it got."""
    runner = web.AppRunner(create_app(router, credentials, dashboard), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # noqa: SLF001 - the only way to learn an ephemeral port
    sockets = getattr(server, "sockets", None) or []
    return runner, (sockets[0].getsockname()[1] if sockets else port)
