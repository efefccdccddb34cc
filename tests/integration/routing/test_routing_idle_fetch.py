"""Routing's readers at idle on the real broker: workers' heartbeats are not traffic, and the
dashboard's reader slows down too.

Heartbeats arrive every 2 s for as long as a worker runs. Counted as records, they held every
fetch on the short wait for ever, so an idle stack polled the broker ~33 times a second.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaProducer

from agentstream.stack.topics import create_topics
from routing.service import RoutingService
from routing.settings import RoutingSettings
from schemas.records import CallEvent, WorkerHeartbeat
from schemas.topics import CALLS, WORKERS, prefixed
from tests.helpers import async_wait_until

pytestmark = pytest.mark.integration


def heartbeat(sent_at_ms: int) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id="worker-1",
        state="ready",
        models_loaded=True,
        assigned=True,
        audio_partitions=list(range(8)),
        partitions_total=8,
        interval_ms=200,
        sent_at_ms=sent_at_ms,
    )


async def test_heartbeats_do_not_keep_the_reader_on_the_short_fetch_wait(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    settings = RoutingSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        host="127.0.0.1",
        port=0,
        consumer_group=f"{topic_prefix}idle",
        fetch_max_wait_ms=30,
        idle_fetch_max_wait_ms=700,
        fetch_idle_after_s=1.0,
    )
    service = RoutingService(settings)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    await service.start()
    try:
        await async_wait_until(lambda: service.router.ready, timeout=20)
        pacer = service.reader.pacer
        workers = prefixed(WORKERS, topic_prefix)
        seen = 0
        deadline = time.monotonic() + 4.0  # four idle periods of heartbeats
        while time.monotonic() < deadline:
            record = heartbeat(int(time.time() * 1000))
            await producer.send_and_wait(workers, record.to_bytes(), key=b"worker-1")
            await asyncio.sleep(0.2)
            seen = max(seen, len(service.reader.board.workers))
        assert seen == 1  # the heartbeats were read
        assert pacer.wait_ms() == 700  # and the reader went idle regardless
        assert service.board_feed.pacer.wait_ms() == 700  # the dashboard's reader too
        # a call event is traffic: back on the short wait
        call = CallEvent(kind="start", call_sid="CA1", occurred_at_ms=int(time.time() * 1000))
        await producer.send_and_wait(prefixed(CALLS, topic_prefix), call.to_bytes(), key=b"CA1")
        await async_wait_until(lambda: pacer.wait_ms() == 30, timeout=10)
        await async_wait_until(lambda: service.board_feed.pacer.wait_ms() == 100, timeout=10)
    finally:
        await service.stop()
        await producer.stop()
