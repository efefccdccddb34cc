"""aiohttp handlers for Exotel's callbacks (Passthru, Connect, StatusCallback) and operations.

Thin: parameters are read from the query, a form or a JSON body (``schemas.callbacks``), the
answer comes from the :class:`~routing.router.Router`'s memory, and every callback's parameters
are recorded on ``agentstream.calls``. Who may call is checked first (:mod:`routing.auth`).

No callback answers a 5xx. Passthru answers only 200 or 302: input it cannot read, and any bug,
gets the rules file's default branch, a (rate-limited) log line and a dead letter. Connect and
status answer bad input with a 4xx JSON error; a bug in Connect answers the default agent group,
in status ``{"ok": false}``; the traceback is logged.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from routing.auth import OPEN, Principal, RoutingAuth, auth_middleware, principal
from routing.connect import connect_answer
from routing.dashboard.http import BROADCASTER_KEY, Broadcaster, add_dashboard
from routing.readiness import BOARD_KEY, WorkerBoard, readiness
from routing.rejects import DeadLetterSink, RateLimitFilter, Rejects
from routing.router import Router
from routing.watermark import WATERMARKS_KEY, WaitResult, Watermarks, wait_for_analysis
from schemas.callbacks import CallbackParams, flatten, parse_callback, parse_json_body
from schemas.deadletter import error_text
from schemas.errors import ProtocolError
from schemas.records import CallEvent

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
ROUTER_KEY = web.AppKey("router", Router)
REPORTS_KEY = web.AppKey("rejects", Rejects)
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
STREAM_START_EVENTS = frozenset({"stream-start", "stream_start", "streamstart", "start"})
# Metric label values come from closed sets; anything else is "other".
STATUS_LABELS = frozenset(
    {
        "completed",
        "failed",
        "busy",
        "no-answer",
        "canceled",
        "cancelled",
        "in-progress",
        "ringing",
        "queued",
        "answered",
        "free",
    }
)
PATH_LABELS = frozenset(
    {
        "/exotel/passthru",
        "/exotel/connect",
        "/exotel/status",
        "/health",
        "/ready",
        "/metrics",
        "/dashboard",
    }
)


def status_label(value: str | None) -> str:
    if not value:
        return "unknown"
    value = value.lower()
    return value if value in STATUS_LABELS else "other"


def path_label(path: str) -> str:
    return path if path in PATH_LABELS else "other"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message, "status": status}, status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProtocolError as exc:
        request.app[REPORTS_KEY].log(
            "bad callback %s %s: %s", request.method, request.path, exc.reason
        )
        return _error(400, exc.reason)
    except (ValidationError, UnicodeDecodeError, ValueError) as exc:
        request.app[REPORTS_KEY].log("bad callback %s %s: %s", request.method, request.path, exc)
        return _error(400, f"malformed parameters: {exc}".splitlines()[0][:300])
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status if exc.status < 500 else 400, exc.reason)
    except Exception:
        logger.exception("%s %s failed", request.method, request.path[:100])
        return _after_bug(request)


def _after_bug(request: web.Request) -> web.Response:
    """What a callback answers when its handler failed: never a 5xx to Exotel."""
    router = request.app[ROUTER_KEY]
    if request.path == "/exotel/connect":
        try:
            body, _, _ = _connect_answer(router, None)
        except LookupError:
            return _error(404, "no agent group is configured in the rules file")
        return web.Response(body=body, content_type="application/json")
    if request.path == "/exotel/status":
        return _json({"ok": False, "error": "internal error, logged"})
    return _error(500, "internal error, logged")


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
    router: Router, kind: str, params: CallbackParams, answer: str, wait: WaitResult | None = None
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
            complete=wait.complete if wait else None,
            waited_ms=round(wait.waited_ms, 1) if wait else None,
        )
    )


async def passthru(request: web.Request) -> web.Response:
    """Passthru: only ever 200 or 302 (Exotel defines no other answer; see docs/routing.md)."""
    router = request.app[ROUTER_KEY]
    started = time.perf_counter()
    try:
        params = await _callback(request)
        if not params.call_sid and not _stream_start(params):
            raise ProtocolError("CallSid is missing")
    except (
        ProtocolError,
        ValidationError,
        UnicodeDecodeError,
        ValueError,
        web.HTTPRequestEntityTooLarge,
    ) as exc:
        return await _passthru_default(request, "bad_request", exc)
    try:
        response = await passthru_answer(request.app, params, principal(request))
    except Exception as exc:
        logger.exception("passthru for %s failed: answering the default branch", params.call_sid)
        return await _passthru_default(request, "error", exc)
    router.metrics.callback_seconds.labels("passthru").observe(time.perf_counter() - started)
    return response


async def passthru_answer(
    app: web.Application, params: CallbackParams, who: Principal = OPEN
) -> web.Response:
    """The answer to one well-formed Passthru (the call's first answer is repeated)."""
    router = app[ROUTER_KEY]
    view = router.book.get(params.call_sid) if params.call_sid else None
    if view is not None and not who.may_access(view.tenant):
        router.metrics.callbacks.labels("passthru", "forbidden").inc()
        return _error(403, "this credential may not steer calls of this tenant")
    if _stream_start(params) or not params.call_sid:
        # Sent before the stream: nothing is decided yet, and the answer must not be pinned.
        status = router.rules.passthru.continue_status
        _record(router, "passthru", params, f"{status} before stream")
        router.metrics.callbacks.labels("passthru", "stream_start").inc()
        return _json({"call_sid": params.call_sid, "decision": "stream_start"}, status)
    # A tenant-bound credential may not seed digits for a call whose tenant is not known yet.
    digits = params.digits if view is not None or not who.bound else None
    wait = await wait_for_analysis(app, router.book, params.call_sid)
    result = await router.passthru(params.call_sid, digits)
    # While routing is still rebuilding its state (start, restart) the answer may miss history.
    complete = wait.complete and result.complete and router.ready
    wait = WaitResult(complete, wait.waited_ms + result.waited_ms)
    # Other instances pin a recorded numeric answer; an unknown call's default is not pinned.
    unknown = result.outcome == "unknown"
    answer = f"{result.status} unknown call" if unknown else str(result.status)
    _record(router, "passthru", params, answer, wait)
    router.metrics.callbacks.labels("passthru", result.outcome).inc()
    router.metrics.passthru_answers.labels("true" if wait.complete else "false").inc()
    escalation = result.view.escalation if result.view else None
    return _json(
        {
            "call_sid": params.call_sid,
            "decision": result.outcome,
            "rule_id": escalation.rule_id if escalation else None,
            "target_group": escalation.target_group if escalation else None,
            "waited_ms": round(wait.waited_ms, 1),
            "complete": wait.complete,
        },
        result.status,
    )


def _stream_start(params: CallbackParams) -> bool:
    return (params.event_type or "").lower() in STREAM_START_EVENTS


async def _passthru_default(request: web.Request, outcome: str, exc: BaseException) -> web.Response:
    """Exotel's default branch for a Passthru we cannot answer; logged and dead-lettered."""
    router = request.app[ROUTER_KEY]
    mapping = router.rules.passthru
    status = mapping.unknown_status or mapping.continue_status
    router.metrics.callbacks.labels("passthru", outcome).inc()
    reason = error_text(exc)
    raw = request.query_string.encode()
    body = b""
    if request.can_read_body:
        with contextlib.suppress(web.HTTPException):
            body = await request.read()  # read (and kept) already, unless it was too large
    request.app[REPORTS_KEY].bad_passthru(reason, raw + b"\n" + body[:MAX_BODY_BYTES])
    return _json({"decision": "default", "error": reason}, status)


async def connect(request: web.Request) -> web.Response:
    router = request.app[ROUTER_KEY]
    started = time.perf_counter()
    params = await _callback(request)
    if not params.call_sid:
        raise ProtocolError("CallSid is missing")
    view = router.book.get(params.call_sid)
    if view is not None and not principal(request).may_access(view.tenant):
        router.metrics.callbacks.labels("connect", "forbidden").inc()
        return _error(403, "this credential may not read calls of this tenant")
    try:
        body, name, escalated = _connect_answer(router, params.call_sid)
    except LookupError:
        router.metrics.callbacks.labels("connect", "no_group").inc()
        return _error(404, "no agent group is configured in the rules file")
    if not escalated:
        request.app[REPORTS_KEY].log(
            "connect for %s, which was not escalated: group %s",
            params.call_sid,
            name,
            level=logging.INFO,
        )
    _record(router, "connect", params, name)
    router.metrics.callbacks.labels("connect", "escalated" if escalated else "default").inc()
    router.metrics.callback_seconds.labels("connect").observe(time.perf_counter() - started)
    return web.Response(body=body, content_type="application/json")


def _connect_answer(router: Router, call_sid: str | None) -> tuple[bytes, str, bool]:
    """The Connect JSON for ``call_sid`` (None: the default group's), its group, escalated."""
    view = router.book.get(call_sid) if call_sid else None
    decision = view.escalation if view else None
    found = router.rules.agent_group(decision.target_group if decision else None)
    if found is None:
        raise LookupError("no agent group")
    name, group = found
    return connect_answer(group, decision).to_json(), name, decision is not None


async def status(request: web.Request) -> web.Response:
    router = request.app[ROUTER_KEY]
    started = time.perf_counter()
    params = await _callback(request)
    if not params.call_sid:
        raise ProtocolError("CallSid is missing")
    view = router.book.get(params.call_sid)
    if view is not None and not principal(request).may_access(view.tenant):
        router.metrics.callbacks.labels("status", "forbidden").inc()
        return _error(403, "this credential may not report on calls of this tenant")
    _record(router, "status", params, "ok")
    router.metrics.callbacks.labels("status", status_label(params.status)).inc()
    router.metrics.callback_seconds.labels("status").observe(time.perf_counter() - started)
    return _json({"ok": True, "call_sid": params.call_sid})


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    router = request.app[ROUTER_KEY]
    ok, body = readiness(request.app, router.ready)
    return _json({**body, "calls": len(router.book.calls)}, 200 if ok else 503)


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
    auth: RoutingAuth | None = None,
    dead_letters: DeadLetterSink | None = None,
    *,
    credentials: dict[str, str] | None = None,
    dashboard: Broadcaster | None = None,
    watermarks: Watermarks | None = None,
    board: WorkerBoard | None = None,
) -> web.Application:
    """Exotel's callbacks and the operations endpoints.

    ``auth`` (or just ``credentials``) guards ``/exotel/*`` and ``/dashboard*`` (None: open);
    ``dead_letters`` receives bad Passthru input; with ``dashboard``, the supervisor dashboard;
    with ``watermarks``, Passthru waits for the call's analysis; with ``board``, ``/ready``
    needs the workers too.
    """
    if auth is None and credentials:
        auth = RoutingAuth(credentials)
    rejects = Rejects(dead_letters)

    def refused(path: str, reason: str, remote: str | None) -> None:
        router.metrics.refused.labels(path_label(path), reason).inc()
        rejects.refused(path, reason, remote)

    middlewares: list[Middleware] = [_errors]
    if auth is not None:
        middlewares.insert(0, auth_middleware(auth, refused))
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY_BYTES)
    app[ROUTER_KEY] = router
    app[REPORTS_KEY] = rejects
    if watermarks is not None:
        app[WATERMARKS_KEY] = watermarks
    if board is not None:
        app[BOARD_KEY] = board  # /ready then needs the workers too
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
    router: Router, host: str, port: int, **parts: Any
) -> tuple[web.AppRunner, int]:
    """Start the app on ``host:port`` (``parts``: :func:`create_app`'s keywords); the runner
    (for cleanup) and the port it got."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, RateLimitFilter) for f in server_log.filters):
        server_log.addFilter(RateLimitFilter())  # malformed requests must not flood the log
    # aiohttp refuses a request line or header over 8 KiB with its own 400; let callbacks up to
    # 64 KiB reach the handlers, whose own limits answer Exotel's default branch instead.
    runner = web.AppRunner(
        create_app(router, **parts),
        access_log=None,
        max_line_size=65536,
        max_field_size=65536,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # noqa: SLF001 - the only way to learn an ephemeral port
    sockets = getattr(server, "sockets", None) or []
    return runner, (sockets[0].getsockname()[1] if sockets else port)
