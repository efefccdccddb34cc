"""Property-based fuzzing of routing's HTTP side through a real aiohttp server: whatever query,
body and headers arrive, Passthru answers 200 or 302 and no endpoint answers a 5xx."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing.auth import RoutingAuth
from routing.http import create_app
from routing.router import ListPublisher, Router
from schemas.auth import basic_header
from schemas.records import DeadLetter
from tests.unit.routing.routing_fakes import rules_with

pytestmark = pytest.mark.unit

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
AUTH = basic_header("exotel", "tok")


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """The routing app on a loopback port, served from its own thread and event loop."""
    loop = asyncio.new_event_loop()
    router = Router(
        rules_with({"id": "zero", "kind": "dtmf", "digits": ["0"], "target": "legal"}),
        ListPublisher(),
    )
    router.ready = True
    letters: list[DeadLetter] = []
    app = create_app(router, RoutingAuth({"exotel": "tok"}), letters.append)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield bound
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def send(port: int, method: str, target: str, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, target, body=body or None, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


KEYS = st.sampled_from(
    ["CallSid", "digits", "Stream", "Stream[StreamSID]", "Status", "DialCallDuration", "EventType"]
) | st.text(max_size=10)
query = st.lists(st.tuples(KEYS, st.text(max_size=40)), max_size=12).map(
    lambda items: "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in items)
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "",
        "multipart/form-data",
    ]
)


@FUZZ
@given(
    st.sampled_from(["/exotel/passthru", "/exotel/connect", "/exotel/status"]),
    st.sampled_from(["GET", "POST"]),
    query,
    st.binary(max_size=300) | st.text(max_size=200).map(str.encode),
    content_types,
)
def test_any_request(
    port: int, path: str, method: str, qs: str, body: bytes, content_type: str
) -> None:
    headers = {"Authorization": AUTH}
    if content_type:
        headers["Content-Type"] = content_type
    status = send(port, method, f"{path}?{qs}", body if method == "POST" else b"", headers)
    if path == "/exotel/passthru":
        assert status in (200, 302)
    else:
        assert status < 500


@FUZZ
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80))
def test_any_authorization_is_refused_cleanly(port: int, value: str) -> None:
    status = send(port, "GET", "/exotel/passthru?CallSid=CA1", b"", {"Authorization": value})
    assert status == 401
