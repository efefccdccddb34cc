"""Routing under faults, against the real broker: a frozen broker, a rebalance, a restart with a
large history. Nothing is lost, nothing is committed ahead of its decision, nothing escalates
falsely."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agentstream.stack.broker import EmbeddedBroker
from agentstream.stack.topics import create_topics
from routing.service import RoutingService
from routing.settings import RoutingSettings
from schemas.records import CallEvent, CallState, Decision, Record, Score, Sentiment
from schemas.topics import CALLS, DECISIONS, SCORES, prefixed
from tests.helpers import async_wait_until, read_topic, wait_until

pytestmark = pytest.mark.integration

ANGRY_RULES = """
version: 1
agent_groups:
  support: {numbers: ["+918040001000"], caller_id: "08047112233"}
default:
  rules:
    - {id: angry, kind: sentiment_rolling, threshold: -0.5, last_n: 3, target: support}
"""
QUIET_RULES = """
version: 1
agent_groups:
  support: {numbers: ["+918040001000"], caller_id: "08047112233"}
default:
  rules:
    - {id: angry, kind: sentiment_rolling, threshold: -0.5, last_n: 3, target: support}
    - {id: quiet, kind: silence, seconds: 4, target: support}
"""


def now_ms() -> int:
    return int(time.time() * 1000)


def score(call_sid: str, index: int, value: float) -> Score:
    t = now_ms()
    return Score(
        call_sid=call_sid,
        stream_sid=f"ST-{call_sid}",
        utterance_id=f"{call_sid}-{index}",
        utterance_index=index,
        text=f"utterance {index} of {call_sid}",
        sentiment=Sentiment(score=value, label="neutral", confidence=0.95, engine="test"),
        state=CallState(utterance_count=index + 1),
        speech_end_at_ms=t - 300,
        transcript_at_ms=t - 10,
        scored_at_ms=t,
        latency_ms=10.0,
    )


def event(call_sid: str, kind: str) -> CallEvent:
    return CallEvent(
        kind=kind,  # type: ignore[arg-type]
        call_sid=call_sid,
        stream_sid=f"ST-{call_sid}",
        occurred_at_ms=now_ms(),
    )


async def produce(bootstrap: str, topic: str, records: list[Record], **kw: Any) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for record in records:
            key = str(getattr(record, "call_sid", "")).encode()
            await producer.send(topic, record.to_bytes(), key=key, **kw)
        await producer.flush()
    finally:
        await producer.stop()


def settings(bootstrap: str, prefix: str, group: str, **kw: Any) -> RoutingSettings:
    return RoutingSettings(
        bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        host="127.0.0.1",
        port=0,
        consumer_group=f"{prefix}{group}",
        tick_interval_ms=50,
        commit_interval_s=0.1,
        **kw,
    )


Starter = Callable[[RoutingSettings], Any]


@pytest.fixture
async def start() -> AsyncIterator[Starter]:
    running: list[RoutingService] = []

    async def go(s: RoutingSettings) -> RoutingService:
        service = RoutingService(s)
        running.append(service)
        await service.start()
        await async_wait_until(lambda: service.router.ready, timeout=30)
        return service

    yield go
    for service in running:
        await service.stop()


def decisions(bootstrap: str, prefix: str, expected: int) -> list[Decision]:
    raws = read_topic(bootstrap, prefixed(DECISIONS, prefix), expected, timeout=20)
    return [Decision.model_validate(orjson.loads(r.value)) for r in raws]


async def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        total = 0
        for p in range(8):
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


async def test_a_broker_frozen_longer_than_the_delivery_timeout_loses_no_decision(
    unique: str, tmp_path: Path
) -> None:
    prefix = f"f{unique}."
    rules = tmp_path / "rules.yaml"
    rules.write_text(ANGRY_RULES)
    service: RoutingService | None = None
    broker = EmbeddedBroker().start()
    assert broker.process is not None
    pid = broker.process.pid
    thawed = threading.Event()
    try:
        bootstrap = broker.bootstrap
        create_topics(bootstrap, prefix)
        s = settings(
            bootstrap,
            prefix,
            "g",
            producer_delivery_timeout_ms=1000,
            publish_retry_backoff_ms=50,
            publish_retry_backoff_max_ms=200,
            rules_path=rules,
        )
        service = RoutingService(s)
        await service.start()
        await async_wait_until(lambda: service is not None and service.router.ready, timeout=30)
        loop = service.evaluator_loop
        await async_wait_until(lambda: bool(loop.owned), timeout=30)
        assert loop.consumer is not None
        # Every commit must come after every decision so far is acknowledged.
        backlog_at_commit: list[int] = []
        real_commit = loop.consumer.commit

        async def spy_commit(*args: Any, **kwargs: Any) -> None:
            backlog_at_commit.append(service.publisher.backlog)
            await real_commit(*args, **kwargs)

        loop.consumer.commit = spy_commit  # type: ignore[method-assign]
        publisher = service.publisher
        real_publish = publisher.publish_decision

        def thaw_after_failed_sends() -> None:
            try:  # frozen until two sends timed out: longer than the delivery timeout
                wait_until(lambda: publisher.retries >= 2, timeout=60)
            finally:
                os.kill(pid, signal.SIGCONT)
                thawed.set()

        def freeze_at_first_decision(decision: Decision) -> None:
            if not thawed.is_set() and not getattr(publisher, "_frozen", False):
                publisher._frozen = True  # type: ignore[attr-defined]
                os.kill(pid, signal.SIGSTOP)
                threading.Thread(target=thaw_after_failed_sends, daemon=True).start()
            real_publish(decision)

        publisher.publish_decision = freeze_at_first_decision  # type: ignore[method-assign]
        angry, calm = f"CA-angry-{unique}", f"CA-calm-{unique}"
        scores = [score(angry, i, -0.8) for i in range(3)] + [score(calm, i, 0.5) for i in range(3)]
        await produce(bootstrap, prefixed(SCORES, prefix), list(scores))
        await async_wait_until(thawed.is_set, timeout=90)
        assert publisher.retries >= 2
        # angry-0 continue, angry-1 escalate (2 of 3 below -0.5 is enough), calm 0..2 continue;
        # angry-2 comes after the escalation: nothing more is decided for the call.
        got = await asyncio.to_thread(decisions, bootstrap, prefix, 5)
        by_utterance = {d.utterance_id: d.decision for d in got}
        assert by_utterance == {
            f"{angry}-0": "continue",
            f"{angry}-1": "escalate",
            **{f"{calm}-{i}": "continue" for i in range(3)},
        }
        topic = prefixed(SCORES, prefix)
        await async_wait_until(
            lambda: _equals(committed(bootstrap, s.consumer_group, topic), 6), timeout=20
        )
        assert backlog_at_commit and set(backlog_at_commit) == {0}
    finally:
        os.kill(pid, signal.SIGCONT)
        if service is not None:
            await service.stop()
        broker.stop()


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def test_two_instances_through_a_rebalance_escalate_no_live_call(
    kafka_bootstrap: str, topic_prefix: str, start: Starter, tmp_path: Path, unique: str
) -> None:
    """Eight talking calls, a silence rule of 4 s; a second instance joins mid-call. Neither
    the old owner (timers of calls it lost) nor the new one (calls it adopted) escalates."""
    create_topics(kafka_bootstrap, topic_prefix)
    rules = tmp_path / "rules.yaml"
    rules.write_text(QUIET_RULES)
    s = settings(kafka_bootstrap, topic_prefix, "g", rules_path=rules, rules_poll_s=0)
    calls = [f"CA-{unique}-{n}" for n in range(8)]
    first = await start(s)
    await async_wait_until(lambda: len(first.evaluator_loop.owned) == 8, timeout=30)
    await produce(
        kafka_bootstrap, prefixed(CALLS, topic_prefix), [event(c, "start") for c in calls]
    )
    await async_wait_until(
        lambda: all(c in first.router.evaluator.calls for c in calls), timeout=20
    )
    talking = True
    sent = 0

    async def talk() -> None:
        nonlocal sent
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            while talking:
                for call in calls:
                    rec = score(call, sent, 0.4)
                    await producer.send(
                        prefixed(SCORES, topic_prefix), rec.to_bytes(), key=call.encode()
                    )
                sent += 1
                await asyncio.sleep(0.25)  # a caller speaking every quarter second
        finally:
            await producer.stop()

    talker = asyncio.create_task(talk())
    second = await start(s)
    a, b = first.evaluator_loop, second.evaluator_loop
    await async_wait_until(
        lambda: bool(a.owned) and bool(b.owned) and not a.owned & b.owned, timeout=60
    )
    moved = [c for c in calls if b.owns(c.encode(), 0)]
    assert moved, "the second instance took no call"
    # The old owner forgot the calls it lost: no timer of theirs can run there. (It may hold
    # an inert, unowned record made by reading the new owner's decisions back.)
    held = a.router.evaluator.calls
    assert not [c for c in moved if c in held and held[c].owned]
    assert all(b.router.evaluator.calls[c].owned for c in moved if c in b.router.evaluator.calls)
    # The new owner decides their next utterances; then the calls end.
    mark = sent
    await async_wait_until(lambda: sent >= mark + 12, timeout=30)  # 3 s past the rebalance
    talking = False
    await talker
    await produce(kafka_bootstrap, prefixed(CALLS, topic_prefix), [event(c, "stop") for c in calls])
    await async_wait_until(
        lambda: all(
            f"{c}-{sent - 1}"
            in (first.router.book.calls[c].decided | second.router.book.calls[c].decided)
            for c in calls
            if c in first.router.book.calls and c in second.router.book.calls
        ),
        timeout=30,
    )
    got = await asyncio.to_thread(decisions, kafka_bootstrap, topic_prefix, 8 * sent)
    escalations = [d for d in got if d.decision == "escalate"]
    assert not escalations, [(d.call_sid, d.rule_id, d.reason) for d in escalations]


async def test_a_restart_rebuilds_only_the_window_and_honours_the_timeout(
    kafka_bootstrap: str, topic_prefix: str, start: Starter, unique: str
) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    topic = prefixed(DECISIONS, topic_prefix)
    old_ms = now_ms() - 10 * 3600 * 1000  # 10 h ago: outside the default 6 h window

    def escalation(call_sid: str, at_ms: int) -> Decision:
        return Decision(
            call_sid=call_sid,
            decision="escalate",
            rule_id="angry",
            reason="test",
            target_group="support",
            decided_at_ms=at_ms,
            latency_ms=0.0,
        )

    old = [escalation(f"CA-old-{unique}-{n}", old_ms) for n in range(3000)]
    recent = [escalation(f"CA-new-{unique}-{n}", now_ms()) for n in range(20)]
    await produce(kafka_bootstrap, topic, list(old), timestamp_ms=old_ms)
    await produce(kafka_bootstrap, topic, list(recent))
    s = settings(kafka_bootstrap, topic_prefix, "g")
    service = await start(s)
    book = service.router.book.calls
    assert all(d.call_sid in book for d in recent)
    assert not any(d.call_sid in book for d in old), "decisions older than the window rebuilt"
    assert service.reader.complete and not service.reader.rebuilding
    # A rebuild that cannot finish in time answers from what it read, and says so.
    short = settings(
        kafka_bootstrap, topic_prefix, "h", rebuild_timeout_s=0.001, rebuild_window_h=24
    )
    hurried = await start(short)
    assert not hurried.reader.complete
    assert not hurried.reader.rebuilding
