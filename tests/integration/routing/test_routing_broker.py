"""Routing through the real broker: scores in, decisions out, Passthru answers, restart."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from agentstream.stack.topics import create_topics
from routing.service import RoutingService
from routing.settings import RoutingSettings
from schemas.records import CallEvent, CallState, Decision, Score, Sentiment
from schemas.topics import CALLS, DECISIONS, SCORES, prefixed
from tests.helpers import async_wait_until, read_topic

pytestmark = pytest.mark.integration

TENANT = {"tenant": "shopnow", "campaign": "deflection"}


def now_ms() -> int:
    return int(time.time() * 1000)


def make_score(call_sid: str, index: int, value: float, text: str) -> Score:
    label = "negative" if value < -0.2 else "positive" if value > 0.2 else "neutral"
    t = now_ms()
    return Score(
        call_sid=call_sid,
        stream_sid=f"ST-{call_sid}",
        **TENANT,
        utterance_id=f"{call_sid}-{index}",
        utterance_index=index,
        text=text,
        sentiment=Sentiment(score=value, label=label, confidence=0.95, engine="test"),
        state=CallState(utterance_count=index + 1),
        speech_end_at_ms=t - 900,
        transcript_at_ms=t - 10,
        scored_at_ms=t,
        latency_ms=10.0,
    )


ANGRY = [
    (-0.6, "My order is three weeks late and nobody has helped me."),
    (-0.8, "This is terrible and I am really angry."),
    (-0.9, "You are useless, this is the worst company ever."),
]
CALM = [
    (0.3, "Hi, what time does your store open on Sunday?"),
    (0.5, "Great, and is there free parking?"),
    (0.8, "Perfect, thank you so much."),
]

Starter = Callable[[str], Awaitable[RoutingService]]


@pytest.fixture
async def start_service(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[Starter]:
    create_topics(kafka_bootstrap, topic_prefix)
    running: list[RoutingService] = []

    async def start(group: str) -> RoutingService:
        settings = RoutingSettings(
            bootstrap_servers=kafka_bootstrap,
            topic_prefix=topic_prefix,
            host="127.0.0.1",
            port=0,
            consumer_group=f"{topic_prefix}{group}",
            tick_interval_ms=50,
            passthru_grace_ms=200,
        )
        service = RoutingService(settings)
        running.append(service)
        await service.start()
        await async_wait_until(lambda: service.router.ready, timeout=20)
        return service

    yield start
    for service in running:
        await service.stop()


async def produce(bootstrap: str, topic: str, records: list[Score | CallEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(topic, record.to_bytes(), key=record.call_sid.encode())
    finally:
        await producer.stop()


async def passthru(service: RoutingService, call_sid: str) -> int:
    url = f"http://127.0.0.1:{service.http_port}/exotel/passthru"
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            url, params={"CallSid": call_sid, "Stream[Status]": "completed"}, allow_redirects=False
        ) as response,
    ):
        await response.read()
        return response.status


def decisions(bootstrap: str, prefix: str, expected: int) -> list[Decision]:
    raws = read_topic(bootstrap, prefixed(DECISIONS, prefix), expected, timeout=10)
    return [Decision.model_validate(orjson.loads(r.value)) for r in raws]


async def test_angry_call_302_calm_call_200_and_restart_rebuilds(
    kafka_bootstrap: str, topic_prefix: str, start_service: Starter, unique: str
) -> None:
    service = await start_service("a")
    angry, calm = f"CA-angry-{unique}", f"CA-calm-{unique}"
    await produce(
        kafka_bootstrap,
        prefixed(CALLS, topic_prefix),
        [
            CallEvent(kind="start", call_sid=sid, occurred_at_ms=now_ms(), **TENANT)
            for sid in (angry, calm)
        ],
    )
    scores = [make_score(angry, i, v, t) for i, (v, t) in enumerate(ANGRY)]
    scores += [make_score(calm, i, v, t) for i, (v, t) in enumerate(CALM)]
    await produce(kafka_bootstrap, prefixed(SCORES, topic_prefix), scores)

    def both_decided() -> bool:
        a, c = service.router.book.get(angry), service.router.book.get(calm)
        return bool(a and a.escalation and c and len(c.decided) == 3)

    await async_wait_until(both_decided, timeout=20)
    assert await passthru(service, angry) == 302
    assert await passthru(service, calm) == 200

    published = decisions(kafka_bootstrap, topic_prefix, 5)
    escalations = [d for d in published if d.decision == "escalate"]
    assert [(d.call_sid, d.rule_id, d.target_group) for d in escalations] == [
        (angry, "angry-caller", "marketplace_agents")
    ]
    assert escalations[0].utterance_id == f"{angry}-1"  # the second angry line tips the mean
    assert escalations[0].speech_end_at_ms > 0 and 0 <= escalations[0].latency_ms < 5000
    assert len([d for d in published if d.call_sid == calm]) == 3

    def passthru_answers() -> set[tuple[str, str | None]]:
        raws = read_topic(kafka_bootstrap, prefixed(CALLS, topic_prefix), 4, timeout=5)
        events = (CallEvent.model_validate(orjson.loads(r.value)) for r in raws)
        return {(e.call_sid, e.answer) for e in events if e.kind == "passthru"}

    await async_wait_until(lambda: len(passthru_answers()) == 2, timeout=15, interval=0.2)
    assert passthru_answers() == {(angry, "302"), (calm, "200")}

    # Restart: a fresh instance of the same group answers from state rebuilt from decisions.
    await service.stop()
    restarted = await start_service("a")
    assert await passthru(restarted, angry) == 302
    assert await passthru(restarted, calm) == 200

    # A replay of every score (a new group reads from the beginning) decides nothing twice,
    # and a further angry utterance does not escalate the call again.
    await restarted.stop()
    replayer = await start_service("b")
    await produce(
        kafka_bootstrap,
        prefixed(SCORES, topic_prefix),
        [make_score(angry, 3, -1.0, "Useless!"), make_score(calm, 3, 0.9, "Bye now.")],
    )

    def marker_decided() -> bool:
        view = replayer.router.book.get(calm)
        return view is not None and f"{calm}-3" in view.decided

    await async_wait_until(marker_decided, timeout=20)
    assert await passthru(replayer, angry) == 302
    final = decisions(kafka_bootstrap, topic_prefix, 6)
    assert [d.call_sid for d in final if d.decision == "escalate"] == [angry]
    keys = [(d.call_sid, d.utterance_id) for d in final]
    assert len(keys) == len(set(keys)) == 6, "a replayed score was decided twice"
