"""DecisionPublisher (retry until acknowledged, order, flush as a commit point) and the
evaluator loop's ownership (no claim before assignment, drop on loss, adopt on gain)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaTimeoutError

from routing.evaluator_loop import EvaluatorLoop
from routing.metrics import RoutingMetrics
from routing.parse import RecordParser
from routing.publisher import DecisionPublisher
from routing.router import ListPublisher, Router
from routing.settings import RoutingSettings
from schemas.partition import partition_for
from schemas.records import CallEvent, Decision
from tests.helpers import async_wait_until
from tests.unit.routing.routing_fakes import FakeClock, call_event, rules_with
from tests.unit.routing.test_routing_watermark import marker


class FlakyProducer:
    """Acknowledges sends, except that the next ``failures`` ones fail (in the future)."""

    def __init__(self) -> None:
        self.failures = 0
        self.written: list[tuple[str, bytes]] = []
        self.block: asyncio.Event | None = None

    async def send(self, topic: str, value: bytes, key: Any, headers: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failures:
            self.failures -= 1
            fut.set_exception(KafkaTimeoutError())
        else:
            self.written.append((topic, value))
            fut.set_result(None)
        return fut


def decision(n: int) -> Decision:
    return Decision(
        call_sid=f"CA-{n}",
        decision="continue",
        reason="no rule matched",
        utterance_id=f"CA-{n}-0",
        decided_at_ms=1,
        latency_ms=0.0,
    )


def publisher(**kw: Any) -> tuple[DecisionPublisher, FlakyProducer]:
    s = RoutingSettings(publish_retry_backoff_ms=1, publish_retry_backoff_max_ms=2, **kw)
    pub = DecisionPublisher(s, RoutingMetrics())
    producer = FlakyProducer()
    pub.start(producer)  # type: ignore[arg-type]
    return pub, producer


async def test_a_failed_send_is_retried_until_acknowledged_in_order() -> None:
    pub, producer = publisher()
    producer.failures = 7
    for n in range(5):
        pub.publish_decision(decision(n))
    assert await pub.flush(timeout_s=10)
    values = [Decision.model_validate_json(v).call_sid for _, v in producer.written]
    # The outage ended in the middle of a window: what followed the first failure is sent
    # again after it (at least once, the last copies in publish order; readers dedupe).
    assert values[-5:] == [f"CA-{n}" for n in range(5)]
    assert pub.backlog == 0
    await pub.stop()


async def test_flush_does_not_return_before_the_outage_ends() -> None:
    pub, producer = publisher()
    producer.failures = 10**9  # the broker is gone
    pub.publish_decision(decision(1))
    assert not await pub.flush(timeout_s=0.05), "a commit point passed an unacknowledged decision"
    assert pub.backlog == 1
    producer.failures = 0  # back
    assert await pub.flush(timeout_s=10)
    assert len(producer.written) == 1
    await pub.stop()


async def test_callback_records_are_shed_beyond_the_cap_but_decisions_never() -> None:
    pub, producer = publisher(publish_max_pending=2)
    producer.failures = 10**9
    event = CallEvent(kind="passthru", call_sid="CA-x", occurred_at_ms=1)
    for n in range(4):
        pub.publish_decision(decision(n))
        pub.publish_call_event(event)
    await async_wait_until(lambda: pub.retries > 0, timeout=5)
    assert pub.dropped == 3 and pub.backlog == 5  # the first event fitted under the cap
    producer.failures = 0
    assert await pub.flush(timeout_s=10)
    assert sum(1 for topic, _ in producer.written if topic == pub.decisions_topic) == 4
    await pub.stop()


def loop_with(clock: FakeClock) -> tuple[EvaluatorLoop, Router]:
    rules = rules_with({"id": "quiet", "kind": "silence", "seconds": 10, "target": "support"})
    router = Router(rules, ListPublisher(), clock=clock)
    s = RoutingSettings()
    pub = DecisionPublisher(s, RoutingMetrics())
    loop = EvaluatorLoop(s, {}, "scores", router, RecordParser(RoutingMetrics(), pub), pub)
    return loop, router


def sids_on(partition: int, count: int) -> list[str]:
    out, n = [], 0
    while len(out) < count:
        sid = f"CA-{n}"
        if partition_for(sid.encode(), 8) == partition:
            out.append(sid)
        n += 1
    return out


def test_no_call_is_owned_before_an_assignment() -> None:
    loop, _ = loop_with(FakeClock())
    assert not loop.owns(b"CA-1", 0)
    loop.on_assigned({0, 1}, 8)
    assert loop.owns(sids_on(0, 1)[0].encode(), 5)
    assert not loop.owns(sids_on(2, 1)[0].encode(), 2)


async def test_lost_partitions_take_their_timers_and_new_ones_adopt_live_calls() -> None:
    clock = FakeClock()
    loop, router = loop_with(clock)
    kept, lost, gained = sids_on(0, 1)[0], sids_on(1, 1)[0], sids_on(2, 1)[0]
    loop.on_assigned({0, 1}, 8)
    for sid in (kept, lost, gained):
        start = call_event("start", sid, clock.t)
        router.on_observed_call_event(start)  # every instance's reader sees every call
        if loop.owns(sid.encode(), 0):
            router.on_call_event(start)
    assert set(router.evaluator.calls) == {kept, lost}
    # The other owner's decision for ``gained``, read back: an inert record here, not owned.
    other = decision(0).model_copy(update={"call_sid": gained, "utterance_id": f"{gained}-0"})
    router.on_decision_record(other)
    assert not router.evaluator.calls[gained].owned
    clock.advance(8)
    await loop.on_revoked({0, 1})
    clock.advance(8)  # the rebalance pause: 16 s since the start, past the 10 s silence rule
    assert not loop.owned, "the service ticks timers only while the loop owns partitions"
    loop.on_assigned({0, 2}, 8)
    assert set(router.evaluator.calls) == {kept, gained}, "lost call kept or new call not adopted"
    assert router.evaluator.calls[gained].owned

    # Silence is the call's own audio time: the 16 s of wall clock above count for nothing.
    def heard(sid: str, audio_ms: int) -> set[str]:
        before = len(router.publisher.decisions)  # type: ignore[attr-defined]
        loop.on_score(marker(sid, audio_ms, int(clock.t * 1000), "progress"))
        return {d.call_sid for d in router.publisher.decisions[before:]}  # type: ignore[attr-defined]

    assert heard(kept, 9_000) == set(), "the rebalance pause counted as the caller's silence"
    assert heard(kept, 11_000) == {kept}  # 11 s of its own audio without speech
    # ``gained`` was taken over mid-call: its earlier speech is unknown here, so its silence
    # counts from the first offset this instance analyses (late by one period, never early).
    assert heard(gained, 16_000) == set()
    assert heard(gained, 25_000) == set(), "the adoption counted as the caller's silence"
    assert heard(gained, 27_000) == {gained}
