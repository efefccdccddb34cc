"""Who may call routing: the auth matrix through a real aiohttp server, allow-list, proxies."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from routing.auth import RoutingAuth
from routing.dashboard.board import Board
from routing.dashboard.http import Broadcaster
from routing.http import ROUTER_KEY, create_app
from routing.router import ListPublisher, Router
from routing.settings import RoutingSettings
from schemas.auth import basic_header, parse_networks
from schemas.records import CallEvent
from tests.unit.routing.routing_fakes import rules_with

pytestmark = pytest.mark.unit

RULES = rules_with({"id": "zero", "kind": "dtmf", "digits": ["0"], "target": "legal"})
CREDS = {"ops": "ops-token", "acme": "acme-token", "beta": "beta-token"}
TENANTS = {"acme": ["acme"], "beta": ["beta"]}
CALLBACKS = ("/exotel/passthru", "/exotel/connect", "/exotel/status")
PROBES = ("/health", "/ready", "/metrics")

NONE: dict[str, str] = {}
WRONG = {"Authorization": basic_header("acme", "not-the-token")}
OTHER_TENANT = {"Authorization": basic_header("beta", "beta-token")}
RIGHT_TENANT = {"Authorization": basic_header("acme", "acme-token")}
OPERATOR = {"Authorization": basic_header("ops", "ops-token")}


def make_router() -> Router:
    router = Router(RULES, ListPublisher())
    router.ready = True
    # routing learns a call's tenant from its start event on agentstream.calls
    router.on_observed_call_event(
        CallEvent(
            kind="start",
            call_sid="CA-acme",
            tenant="acme",
            campaign="c",
            occurred_at_ms=int(time.time() * 1000),
        )
    )
    return router


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    auth = RoutingAuth(CREDS, tenants=TENANTS)
    async with TestClient(TestServer(create_app(make_router(), auth))) as c:
        yield c


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("path", CALLBACKS)
@pytest.mark.parametrize(
    ("headers", "expected"),
    [(NONE, 401), (WRONG, 401), (OTHER_TENANT, 403), (RIGHT_TENANT, 200), (OPERATOR, 200)],
    ids=["no-credentials", "wrong-credentials", "wrong-tenant", "right-tenant", "operator"],
)
async def test_callback_auth_matrix(
    client: TestClient, method: str, path: str, headers: dict[str, str], expected: int
) -> None:
    r = await getattr(client, method)(path, params={"CallSid": "CA-acme"}, headers=headers)
    assert r.status == expected, await r.text()
    body = await r.json()
    if expected == 401:
        assert r.headers["WWW-Authenticate"].startswith("Basic")
    if expected >= 400:
        assert "error" in body and "CA-acme" not in str(body)  # nothing of the call leaks


@pytest.mark.parametrize("path", PROBES)
async def test_probes_open_by_default_covered_by_setting(path: str) -> None:
    for probes, anonymous in ((False, 200), (True, 401)):
        auth = RoutingAuth(CREDS, tenants=TENANTS, probes=probes)
        async with TestClient(TestServer(create_app(make_router(), auth))) as c:
            assert (await c.get(path)).status == anonymous
            assert (await c.get(path, headers=WRONG)).status == (401 if probes else 200)
            assert (await c.get(path, headers=OPERATOR)).status == 200


async def test_wrong_tenant_neither_steers_nor_pins(client: TestClient) -> None:
    router = client.server.app[ROUTER_KEY]
    r = await client.get("/exotel/passthru?CallSid=CA-acme&digits=0", headers=OTHER_TENANT)
    assert r.status == 403
    view = router.book.get("CA-acme")
    assert view is not None and view.answer is None and view.escalation is None
    publisher = router.publisher
    assert isinstance(publisher, ListPublisher)
    assert not publisher.decisions and not publisher.call_events
    r = await client.get("/exotel/passthru?CallSid=CA-acme&digits=0", headers=RIGHT_TENANT)
    assert r.status == 302 and (await r.json())["rule_id"] == "zero"


async def test_bound_credential_cannot_seed_an_unknown_call(client: TestClient) -> None:
    r = await client.get("/exotel/passthru?CallSid=CA-later&digits=0", headers=OTHER_TENANT)
    assert r.status == 200 and (await r.json())["decision"] == "unknown"
    r = await client.get("/exotel/passthru?CallSid=CA-later2&digits=0", headers=OPERATOR)
    assert r.status == 302  # an unbound (operator) credential may, as before


async def test_ip_allow_list_and_trusted_proxy() -> None:
    router = make_router()
    auth = RoutingAuth(networks=parse_networks(["10.0.0.0/8"]))
    async with TestClient(TestServer(create_app(router, auth))) as c:
        r = await c.get("/exotel/passthru?CallSid=CA-acme")
        assert r.status == 403 and "not allowed" in (await r.json())["error"]
        spoofed = {"X-Forwarded-For": "10.0.0.1"}  # not from a trusted proxy: ignored
        assert (await c.get("/exotel/passthru?CallSid=CA-acme", headers=spoofed)).status == 403
    auth = RoutingAuth(
        networks=parse_networks(["10.0.0.0/8"]), proxies=parse_networks(["127.0.0.1"])
    )
    async with TestClient(TestServer(create_app(router, auth))) as c:
        ok = {"X-Forwarded-For": "203.0.113.9, 10.0.0.1"}
        assert (await c.get("/exotel/passthru?CallSid=CA-acme", headers=ok)).status == 200
        bad = {"X-Forwarded-For": "10.0.0.1, 203.0.113.9"}  # the last untrusted hop decides
        assert (await c.get("/exotel/passthru?CallSid=CA-acme", headers=bad)).status == 403


def test_auth_off_only_when_nothing_is_set() -> None:
    assert not RoutingAuth.from_settings(RoutingSettings()).enabled
    assert RoutingAuth.from_settings(RoutingSettings(basic_auth="k:t")).enabled
    assert RoutingAuth.from_settings(RoutingSettings(allow_ips="10.0.0.0/8")).enabled
    with pytest.raises(ValueError, match="no credential"):
        RoutingSettings(basic_auth="k:t", auth_tenants={"x": ["acme"]})
    with pytest.raises(ValueError, match="KEY:TOKEN"):
        RoutingSettings(basic_auth="no-colon")


async def test_refusals_are_counted_by_closed_labels(client: TestClient) -> None:
    for n in range(30):
        await client.get(f"/random-{n}")
    await client.get("/exotel/passthru")
    r = await client.get("/metrics")
    text = await r.text()
    assert 'agentstream_routing_refused_total{path="other",reason="auth"} 30.0' in text
    assert 'path="/exotel/passthru",reason="auth"' in text
    assert "random-" not in text


async def test_the_dashboard_needs_an_operator_credential() -> None:
    auth = RoutingAuth(CREDS, tenants=TENANTS)
    app = create_app(make_router(), auth, dashboard=Broadcaster(Board(RULES)))
    async with TestClient(TestServer(app)) as c:
        assert (await c.get("/dashboard/", headers=NONE)).status == 401
        assert (await c.get("/dashboard/", headers=RIGHT_TENANT)).status == 403
        assert (await c.get("/dashboard/", headers=OPERATOR)).status == 200
