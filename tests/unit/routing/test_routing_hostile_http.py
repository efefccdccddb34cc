"""Hostile and odd callbacks through a real aiohttp server: Passthru answers only 200 or 302,
no callback answers a 5xx, bad input is logged and dead-lettered within bounds."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from routing.http import create_app
from routing.rejects import RateLimitFilter, TokenBucket
from routing.router import ListPublisher, Router
from routing.state import CallBook, CallView
from schemas.records import CallEvent, DeadLetter
from tests.unit.routing.routing_fakes import rules_with

pytestmark = pytest.mark.unit

RULES = rules_with({"id": "zero", "kind": "dtmf", "digits": ["0"], "target": "legal"})
CALLBACKS = ("/exotel/passthru", "/exotel/connect", "/exotel/status")
Env = tuple[TestClient, Router, list[DeadLetter]]


def make_router(**extra: object) -> Router:
    router = Router(rules_with(*RULES.default.rules, **extra) if extra else RULES, ListPublisher())
    router.ready = True
    return router


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    router = make_router()
    letters: list[DeadLetter] = []
    async with TestClient(TestServer(create_app(router, None, letters.append))) as client:
        yield client, router, letters


HOSTILE: list[tuple[str, dict[str, object]]] = [
    ("get", {"params": {"From": "+91"}}),  # no CallSid
    ("get", {"params": {"CallSid": "CA", "Stream": "{not json"}}),
    ("get", {"params": {"CallSid": "CA", "Stream": "[1]"}}),
    ("post", {"data": {f"k{n}": "v" for n in range(300)}}),  # too many parameters
    ("post", {"data": b"x" * 200_000, "headers": {"Content-Type": "text/plain"}}),
    ("post", {"data": b"\xff\xfe=\xff", "headers": {"Content-Type": "text/plain"}}),
    ("post", {"data": b"{broken", "headers": {"Content-Type": "application/json"}}),
    ("post", {"data": b"[" * 5000 + b"]" * 5000, "headers": {"Content-Type": "application/json"}}),
    ("post", {"json": {"CallSid": "CA", "Stream": {"StreamSID": "S" * 9000}}}),
    ("post", {"data": {"CallSid": "CA", "x": "y" * 8193}}),  # one value too long
]


@pytest.mark.parametrize(("method", "kwargs"), HOSTILE)
async def test_passthru_answers_the_default_branch_and_dead_letters(
    env: Env, method: str, kwargs: dict[str, object]
) -> None:
    client, _, letters = env
    r = await getattr(client, method)("/exotel/passthru", **kwargs)
    assert r.status == 200, await r.text()  # continue_status: Exotel's default branch
    body = await r.json()
    assert body["decision"] == "default" and body["error"]
    assert len(letters) == 1 and letters[0].stage == "routing" and letters[0].error
    for path in CALLBACKS[1:]:
        r = await getattr(client, method)(path, **kwargs)
        assert 400 <= r.status < 500 and "error" in await r.json()


async def test_default_branch_follows_the_rules_file() -> None:
    router = make_router(passthru={"unknown_status": 302})
    async with TestClient(TestServer(create_app(router))) as client:
        assert (await client.get("/exotel/passthru")).status == 302


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999", "9" * 400, '"12"', ""])
async def test_odd_numbers_never_500(env: Env, value: str) -> None:
    client, _, _ = env
    params = {"CallSid": "CA-n", "DialCallDuration": value, "Stream[Duration]": value}
    for path in CALLBACKS:
        r = await client.get(path, params=params)
        assert r.status in (200, 302), (path, r.status)


class BrokenBook(CallBook):
    def get(self, call_sid: str) -> CallView | None:
        raise RuntimeError("a bug")


async def test_a_handler_bug_never_answers_5xx(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    client, router, letters = env
    router.book = BrokenBook()
    r = await client.get("/exotel/passthru?CallSid=CA1")
    assert r.status == 200 and (await r.json())["decision"] == "default"
    assert letters and "RuntimeError: a bug" in letters[-1].error
    r = await client.get("/exotel/connect?CallSid=CA1")
    assert r.status == 200 and "destination" in await r.json()  # the default group
    r = await client.get("/exotel/status?CallSid=CA1")
    assert r.status == 200 and (await r.json())["ok"] is False
    assert "Traceback" in caplog.text or any(rec.exc_info for rec in caplog.records)


async def test_a_flood_is_logged_and_dead_lettered_within_bounds(env: Env) -> None:
    client, _, letters = env
    for _ in range(300):
        assert (await client.get("/exotel/passthru")).status == 200
    assert 1 <= len(letters) <= 150  # a token bucket, not one record per request


async def test_post_json_stream_start_is_answered_without_pinning(env: Env) -> None:
    client, router, _ = env
    start = {
        "CallSid": "CA-new",
        "StreamSid": "ST-1",
        "StreamUrl": "wss://x/stream",
        "AccountSid": "acct",
        "EventType": "stream-start",
    }
    r = await client.post("/exotel/passthru", json=start)
    assert r.status == 200 and (await r.json())["decision"] == "stream_start"
    publisher = router.publisher
    assert isinstance(publisher, ListPublisher)
    event = publisher.call_events[-1]
    assert event.params["EventType"] == "stream-start" and not (event.answer or "").isdigit()
    # The call goes on and escalates by digits: the later Passthru is not stuck at 200.
    r = await client.get("/exotel/passthru", params={"CallSid": "CA-new", "digits": '"0"'})
    assert r.status == 302


async def test_digit_floods_for_unknown_calls_leave_no_state(env: Env) -> None:
    client, router, _ = env
    for n in range(50):
        r = await client.get("/exotel/passthru", params={"CallSid": f"CA{n}", "digits": "7" * 4000})
        assert r.status == 200
    assert not router.evaluator.calls and not router.book.calls
    # a known call's digits are kept, bounded
    router.on_observed_call_event(
        CallEvent(kind="start", call_sid="CA-k", occurred_at_ms=int(time.time() * 1000))
    )
    for _ in range(20):
        router.evaluator.on_digits("CA-k", "7" * 4000)
    assert len(router.evaluator.calls["CA-k"].digits) <= 64


async def test_status_labels_come_from_a_closed_set(env: Env) -> None:
    client, _, _ = env
    for n in range(40):
        await client.get("/exotel/status", params={"CallSid": "CA", "Status": f"weird-{n}"})
    await client.get("/exotel/status", params={"CallSid": "CA", "Status": "completed"})
    text = await (await client.get("/metrics")).text()
    assert '{answer="other",endpoint="status"} 40.0' in text
    assert 'answer="completed"' in text and "weird-" not in text


async def test_json_bodies_of_every_shape_get_an_answer(env: Env) -> None:
    client, _, _ = env
    for body in (b"null", b"1", b'"s"', b"{}", orjson.dumps({"CallSid": None}), b"{" * 3000):
        r = await client.post(
            "/exotel/passthru", data=body, headers={"Content-Type": "application/json"}
        )
        assert r.status in (200, 302)


def test_token_bucket_and_log_filter_bound_a_flood() -> None:
    now = [0.0]
    bucket = TokenBucket(per_s=5, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(5)] == [True, True, True, False, False]
    now[0] += 1.0
    assert sum(bucket.take() for _ in range(10)) == 3  # refilled to the burst, not beyond
    log_filter = RateLimitFilter(per_s=0.001, burst=10)
    record = logging.LogRecord("aiohttp.server", logging.ERROR, "", 0, "bad request", (), None)
    assert sum(log_filter.filter(record) for _ in range(1000)) <= 11


async def test_stream_start_without_call_sid_is_answered_quietly(env: Env) -> None:
    client, _, letters = env
    body = {"StreamSid": "ST-9", "AccountSid": "acct", "EventType": "stream-start"}
    r = await client.post("/exotel/passthru", json=body)
    assert r.status == 200 and (await r.json())["decision"] == "stream_start"
    assert not letters


async def test_an_unknown_calls_default_is_not_pinned_by_other_instances(env: Env) -> None:
    client, router, _ = env
    assert (await client.get("/exotel/passthru?CallSid=CA-future")).status == 200
    publisher = router.publisher
    assert isinstance(publisher, ListPublisher)
    other = CallBook()  # another instance reads what this one recorded
    for event in publisher.call_events:
        other.apply_call_event(event)
    view = other.get("CA-future")
    assert view is None or view.answer is None
