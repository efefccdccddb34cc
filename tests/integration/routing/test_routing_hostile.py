"""The real routing service (broker, reader, HTTP): the auth matrix on every endpoint with a
call's tenant learnt from its start event on agentstream.calls, and hostile callbacks while a
normal call keeps its answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from agentstream.stack.topics import create_topics
from routing.service import RoutingService
from routing.settings import RoutingSettings
from schemas.auth import basic_header
from schemas.records import CallEvent, DeadLetter
from schemas.topics import CALLS, DEADLETTER, prefixed
from tests.helpers import async_wait_until, read_topic

pytestmark = pytest.mark.integration

CREDS = "ops:ops-token,acme:acme-token,beta:beta-token"
TENANTS = {"acme": ["acme"], "beta": ["beta"]}
NONE: dict[str, str] = {}
WRONG = {"Authorization": basic_header("acme", "nope")}
OTHER_TENANT = {"Authorization": basic_header("beta", "beta-token")}
RIGHT = {"Authorization": basic_header("acme", "acme-token")}
OPERATOR = {"Authorization": basic_header("ops", "ops-token")}
MATRIX = [("none", NONE, 401), ("wrong", WRONG, 401), ("tenant", OTHER_TENANT, 403)]


@pytest.fixture
async def service(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[RoutingService]:
    create_topics(kafka_bootstrap, topic_prefix)
    settings = RoutingSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        host="127.0.0.1",
        port=0,
        consumer_group=f"{topic_prefix}routing",
        tick_interval_ms=50,
        basic_auth=CREDS,
        auth_tenants=TENANTS,
    )
    svc = RoutingService(settings)
    await svc.start()
    try:
        await async_wait_until(lambda: svc.router.ready, timeout=20)
        yield svc
    finally:
        await svc.stop()


async def start_calls(bootstrap: str, prefix: str, calls: dict[str, str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for sid, tenant in calls.items():
            event = CallEvent(
                kind="start",
                call_sid=sid,
                tenant=tenant,
                campaign="c",
                occurred_at_ms=int(time.time() * 1000),
            )
            await producer.send_and_wait(
                prefixed(CALLS, prefix), event.to_bytes(), key=sid.encode()
            )
    finally:
        await producer.stop()


async def call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, bytes]:
    async with session.request(method, url, allow_redirects=False, **kwargs) as r:
        return r.status, await r.read()


async def test_auth_matrix_on_every_endpoint(
    service: RoutingService, kafka_bootstrap: str, topic_prefix: str, unique: str
) -> None:
    sid = f"CA-acme-{unique}"
    await start_calls(kafka_bootstrap, topic_prefix, {sid: "acme"})
    await async_wait_until(
        lambda: (v := service.router.book.get(sid)) is not None and v.tenant == "acme", timeout=15
    )
    base = f"http://127.0.0.1:{service.http_port}"
    async with aiohttp.ClientSession() as session:
        for path in ("/exotel/passthru", "/exotel/connect", "/exotel/status"):
            for method in ("GET", "POST"):
                url = f"{base}{path}"
                for name, headers, expected in MATRIX:
                    status, body = await call(
                        session,
                        method,
                        url,
                        params={"CallSid": sid, "digits": "0"},
                        headers=headers,
                    )
                    assert status == expected, (path, method, name, body)
                    assert sid.encode() not in body
                for headers in (RIGHT, OPERATOR):
                    status, _ = await call(
                        session, method, url, params={"CallSid": sid}, headers=headers
                    )
                    assert status in (200, 302), (path, method)
        for path in ("/health", "/ready", "/metrics"):  # open unless auth_probes is set
            for _, headers, _ in MATRIX:
                status, _ = await call(session, "GET", f"{base}{path}", headers=headers)
                assert status in (200, 503), path  # 503: /ready waits for workers, not auth
    view = service.router.book.get(sid)
    assert view is not None and view.escalation is None  # nobody steered it with digits=0


async def test_hostile_flood_while_a_normal_call_is_answered(
    service: RoutingService, kafka_bootstrap: str, topic_prefix: str, unique: str
) -> None:
    normal = f"CA-normal-{unique}"
    await start_calls(kafka_bootstrap, topic_prefix, {normal: "acme"})
    await async_wait_until(lambda: service.router.book.get(normal) is not None, timeout=15)
    url = f"http://127.0.0.1:{service.http_port}/exotel/passthru"
    hostile: list[dict[str, Any]] = [
        {"params": {"From": "x"}},
        {"params": {"CallSid": "CA", "Stream": "{oops"}},
        {"params": {"CallSid": "CA", "DialCallDuration": "inf"}},
        {"params": {"CallSid": "CA-unknown-{n}", "digits": "7" * 4000}},
        {"data": {f"k{n}": "v" for n in range(300)}},
        {"data": b"\xff" * 100, "headers": {"Content-Type": "text/plain"}},
        {"data": b"{" * 4000, "headers": {"Content-Type": "application/json"}},
        {"data": b"x" * 100_000, "headers": {"Content-Type": "application/json"}},
    ]
    statuses: list[int] = []
    sem = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as session:

        async def one(n: int) -> None:
            kwargs = dict(hostile[n % len(hostile)])
            if "params" in kwargs:
                kwargs["params"] = {
                    k: v.replace("{n}", str(n)) for k, v in kwargs["params"].items()
                }
            kwargs["headers"] = {**kwargs.get("headers", {}), **OPERATOR}
            method = "POST" if "data" in kwargs else "GET"
            async with sem:
                statuses.append((await call(session, method, url, **kwargs))[0])

        flood = asyncio.gather(*(one(n) for n in range(400)))
        # meanwhile the normal call escalates by digits and keeps its answer
        status, body = await call(
            session, "GET", url, params={"CallSid": normal, "digits": '"0"'}, headers=RIGHT
        )
        await flood
        assert set(statuses) <= {200, 302}, sorted(set(statuses))
        assert status == 302 and orjson.loads(body)["decision"] == "escalate"
        status, _ = await call(session, "GET", url, params={"CallSid": normal}, headers=RIGHT)
        assert status == 302
    assert not service.router.evaluator.calls.keys() - {normal}  # the flood left no call state
    letters = [
        DeadLetter.model_validate(orjson.loads(r.value))
        for r in read_topic(kafka_bootstrap, prefixed(DEADLETTER, topic_prefix), 5, timeout=15)
    ]
    assert letters and all(letter.stage == "routing" for letter in letters)
