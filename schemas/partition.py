"""The partitioner every producer and owner check shares: Kafka's default, murmur2 of the key.

Topics are co-partitioned by call SID; using Kafka's own default means Java and other clients
agree with us on which partition (and so which process) owns a call.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions`` (Kafka's default murmur2 partitioner)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions
