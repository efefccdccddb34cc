"""Where the audio agent starts a partition it was just assigned, asked of a real broker: the
group's committed offset, else the partition's first offset (never where faust happened to be
handed its first record), and seeks made inside the client's own thread."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from faust.types import TP

from agentstream.stack.topics import create_topics
from analytics.gapless import GaplessMixin
from schemas.topics import AUDIO, prefixed

pytestmark = pytest.mark.integration


class Thread:
    """faust's consumer thread, reduced to what the mixin uses: its client and ``call_thread``."""

    def __init__(self, client: AIOKafkaConsumer) -> None:
        self._consumer = client
        self.calls = 0

    async def call_thread(self, fun: Any, *args: Any) -> Any:
        self.calls += 1
        result = fun(*args)
        return await result if hasattr(result, "__await__") else result


class Consumer(GaplessMixin):
    def __init__(self, client: AIOKafkaConsumer) -> None:
        self._thread = Thread(client)
        self._read_offset: dict[Any, int | None] = {}


async def test_start_offsets_come_from_the_broker(kafka_bootstrap: str, unique: str) -> None:
    prefix = f"t{unique}."
    create_topics(kafka_bootstrap, prefix)
    topic = prefixed(AUDIO, prefix)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for i in range(12):
            await producer.send_and_wait(topic, f"{i}".encode(), partition=1)
    finally:
        await producer.stop()
    client = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{unique}",
        enable_auto_commit=False,
        auto_offset_reset="latest",
    )
    await client.start()
    try:
        committed, fresh = TopicPartition(topic, 1), TopicPartition(topic, 2)
        client.assign([committed, fresh])
        await client.commit({committed: OffsetAndMetadata(7, "")})
        consumer = Consumer(client)
        assert await consumer.broker_start_offset(TP(topic, 1)) == 7
        assert await consumer.broker_start_offset(TP(topic, 2)) == 0  # nothing committed

        await consumer.seek_in_thread(TP(topic, 1), 3)
        assert consumer._read_offset[TP(topic, 1)] == 3
        records = await client.getmany(committed, timeout_ms=5000)
        assert [r.offset for r in records[committed]][:1] == [3]

        client.unsubscribe()  # revoked meanwhile: the seek is skipped, not raised
        await consumer.seek_in_thread(TP(topic, 1), 5)
        assert consumer._read_offset[TP(topic, 1)] == 3
    finally:
        await client.stop()


async def test_without_a_consumer_thread_the_first_record_is_trusted() -> None:
    consumer = GaplessMixin()
    assert await consumer.broker_start_offset(TP("t", 0)) is None
