"""Routing's operator surfaces on the real broker: Basic auth, the dashboard, call summaries."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from agentstream.stack.topics import create_topics
from routing.service import RoutingService
from routing.settings import RoutingSettings
from schemas.records import CallEvent, CallSummary, Score
from schemas.topics import CALL_SUMMARIES, CALLS, SCORES, prefixed
from tests.helpers import async_wait_until, read_topic
from tests.integration.routing.test_routing_broker import (
    ANGRY,
    CALM,
    TENANT,
    make_score,
    now_ms,
    produce,
)

pytestmark = pytest.mark.integration

AUTH = "exotel:t0ken"
HEADERS = {"Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()}


@pytest.fixture
async def service(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[RoutingService]:
    create_topics(kafka_bootstrap, topic_prefix)
    settings = RoutingSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        host="127.0.0.1",
        port=0,
        consumer_group=f"{topic_prefix}ops",
        tick_interval_ms=50,
        passthru_grace_ms=200,
        basic_auth=AUTH,  # type: ignore[arg-type]
        summary_settle_ms=300,
        dashboard_interval_ms=50,
    )
    running = RoutingService(settings)
    await running.start()
    try:
        await async_wait_until(lambda: running.router.ready, timeout=20)
        yield running
    finally:
        await running.stop()


async def test_auth_dashboard_and_summaries(
    service: RoutingService, kafka_bootstrap: str, topic_prefix: str, unique: str
) -> None:
    base = f"http://127.0.0.1:{service.http_port}"
    angry, calm = f"CA-angry-{unique}", f"CA-calm-{unique}"
    async with aiohttp.ClientSession() as http:
        for path in ("/exotel/passthru?CallSid=x", "/dashboard/", "/dashboard/api/calls"):
            async with http.get(base + path, allow_redirects=False) as response:
                assert response.status == 401, path
                assert response.headers["WWW-Authenticate"].startswith("Basic")
        async with http.get(f"{base}/health") as response:
            assert response.status == 200  # probes and Prometheus need no credentials

        start = now_ms()
        await produce(
            kafka_bootstrap,
            prefixed(CALLS, topic_prefix),
            [
                CallEvent(
                    kind="start",
                    call_sid=sid,
                    occurred_at_ms=start,
                    from_number="+919800000001",
                    **TENANT,
                )
                for sid in (angry, calm)
            ],
        )
        scores: list[Score | CallEvent] = [
            make_score(angry, i, v, t) for i, (v, t) in enumerate(ANGRY)
        ]
        scores += [make_score(calm, i, v, t) for i, (v, t) in enumerate(CALM)]
        await produce(kafka_bootstrap, prefixed(SCORES, topic_prefix), scores)

        async def rows() -> list[dict[str, object]]:
            async with http.get(f"{base}/dashboard/api/calls", headers=HEADERS) as response:
                assert response.status == 200
                return list((await response.json())["rows"])

        async def both_on_the_board() -> bool:
            current = await rows()
            return len(current) == 2 and bool(current[0]["escalation"])

        await async_wait_until(both_on_the_board, timeout=20)
        ranked = await rows()
        assert [r["call_sid"] for r in ranked] == [angry, calm]
        assert ranked[0]["caller"] == "+919800000001"

        await produce(
            kafka_bootstrap,
            prefixed(CALLS, topic_prefix),
            [
                CallEvent(kind="stop", call_sid=sid, occurred_at_ms=now_ms(), **TENANT)
                for sid in (angry, calm)
            ],
        )
        for sid, expected in ((angry, 302), (calm, 200)):
            url = f"{base}/exotel/passthru"
            async with http.get(
                url, params={"CallSid": sid}, headers=HEADERS, allow_redirects=False
            ) as response:
                assert response.status == expected
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
        assert 'agentstream_routing_passthru_answers_total{complete="true"} 2.0' in text

    def published() -> float:
        sample = service.metrics.registry.get_sample_value(
            "agentstream_routing_call_summaries_total", {"end": "stopped"}
        )
        return sample or 0.0

    await async_wait_until(lambda: published() >= 2, timeout=20)
    await service.publisher.flush()  # read_topic blocks this loop: send everything first
    raws = read_topic(kafka_bootstrap, prefixed(CALL_SUMMARIES, topic_prefix), 2, timeout=20)
    latest = {}
    for raw in raws:
        summary = CallSummary.model_validate(orjson.loads(raw.value))
        assert raw.key == summary.call_sid.encode()
        latest[summary.call_sid] = summary
    assert set(latest) == {angry, calm}
    escalated, quiet = latest[angry], latest[calm]
    assert escalated.escalated and escalated.escalation_rule_id
    assert escalated.sentiment_min is not None and escalated.sentiment_min <= -0.8
    assert escalated.utterance_count == 3 and quiet.utterance_count == 3
    assert not quiet.escalated and quiet.sentiment_end == 0.8
    assert quiet.from_number == "+919800000001" and quiet.tenant == TENANT["tenant"]
    assert quiet.end_reason == "stopped" and quiet.duration_ms >= 0
