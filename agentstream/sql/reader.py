"""Read whole topics from Kafka into :class:`~agentstream.sql.tables.TopicRecord` lists.

Every partition from the beginning, no consumer group. The embedded broker answers
ListOffsets(latest) too low, so a topic counts as read when every partition is at its end
offset *and* nothing new arrived for ``idle_ms``, whichever comes last.
"""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition

from agentstream.sql.tables import TopicRecord


def read_topics(
    bootstrap: str,
    topics: dict[str, str],
    *,
    idle_ms: int = 500,
    fetch_max_wait_ms: int = 30,
    timeout_s: float = 300.0,
) -> dict[str, list[TopicRecord]]:
    """``topics`` maps the Kafka topic name to its catalogue name; records per catalogue name."""
    out: dict[str, list[TopicRecord]] = {name: [] for name in topics.values()}
    if not topics:
        return out
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=fetch_max_wait_ms,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        client_id="agentstream-sql",
    )
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not tps:
            return out
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        quiet_since = time.monotonic()
        deadline = quiet_since + timeout_s
        while time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=100, max_records=5000)
            if batches:
                quiet_since = time.monotonic()
            for tp, messages in batches.items():
                sink = out[topics[tp.topic]]
                sink.extend(
                    TopicRecord(
                        topic=topics[tp.topic],
                        partition=m.partition,
                        offset=m.offset,
                        key=m.key,
                        value=m.value,
                        timestamp_ms=int(m.timestamp),
                        headers=list(m.headers or ()),
                    )
                    for m in messages
                )
            at_end = all(consumer.position(tp) >= ends.get(tp, 0) for tp in tps)
            if at_end and (time.monotonic() - quiet_since) * 1000 >= idle_ms:
                break
    finally:
        consumer.close()
    return out
