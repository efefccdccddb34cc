"""The paced fetch wait on a real consumer: it reaches the fetch requests, and an idle consumer
(long wait) still gets the next record, after which it is on the short wait again."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agentstream.stack.topics import create_topics
from schemas.fetchwait import FetchPacer
from schemas.topics import DECISIONS, prefixed

pytestmark = pytest.mark.integration


async def test_idle_paced_consumer_gets_the_next_record(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    create_topics(kafka_bootstrap, topic_prefix, specs=(DECISIONS,))
    topic = prefixed(DECISIONS, topic_prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, fetch_max_wait_ms=30
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    pacer = FetchPacer(30, 1000, 60.0)
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(DECISIONS.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        assert pacer.apply(consumer) == 1000
        assert consumer._fetcher._fetch_max_wait_ms == 1000  # the attribute aiokafka sends
        await consumer.getmany(timeout_ms=100)  # an idle fetch is in flight now
        await producer.send_and_wait(topic, b"x", key=b"CA1")
        got: list[bytes] = []
        for _ in range(50):  # bounded: 50 polls of up to 200 ms
            batches = await consumer.getmany(timeout_ms=200)
            if batches:
                pacer.saw_records()
            pacer.apply(consumer)
            got += [r.value or b"" for rs in batches.values() for r in rs]
            if got:
                break
        assert got == [b"x"]
        assert consumer._fetcher._fetch_max_wait_ms == 30
    finally:
        await producer.stop()
        await consumer.stop()
