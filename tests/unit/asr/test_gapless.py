"""The worker's consumer never delivers past a gap: it seeks back and reads the records again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from analytics.gapless import GaplessMixin


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class Message:
    offset: int


@dataclass
class FakeConsumer:
    """Stands in for faust's Consumer: a log per partition and a fetch position that a test can
    push ahead (as faust does when it drops a fetched batch)."""

    logs: dict[TP, int]
    positions: dict[TP, int] = field(default_factory=dict)
    committed: dict[TP, int] = field(default_factory=dict)
    seeks: list[tuple[TP, int]] = field(default_factory=list)
    _read_offset: dict[TP, int | None] = field(default_factory=dict)
    batch: int = 3

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        batches = {}
        for tp, end in self.logs.items():  # as aiokafka: the position moves past the batch
            start = self.positions.get(tp, 0)
            batches[tp] = range(start, min(end, start + self.batch))
            self.positions[tp] = max(start, batches[tp].stop)
        for tp, offsets in batches.items():
            for offset in offsets:
                yield tp, Message(offset)

    async def perform_seek(self) -> None:
        for tp in self.logs:
            offset = self.committed.get(tp)
            self._read_offset[tp] = offset
            if offset is not None:
                self.positions[tp] = offset

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.positions[tp] = offset

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._read_offset.pop(tp, None)


class Consumer(GaplessMixin, FakeConsumer):
    pass


AUDIO = TP("agentstream.audio", 2)
CHANGELOG = TP("app-agentstream-callstate-changelog", 2)


async def drain(consumer: Any, rounds: int = 40) -> list[tuple[TP, int]]:
    got: list[tuple[TP, int]] = []
    for _ in range(rounds):
        async for tp, message in consumer.getmany(timeout=0):
            got.append((tp, message.offset))
    return got


async def test_a_jump_past_unread_records_is_read_again_in_order() -> None:
    consumer = Consumer(logs={AUDIO: 20}, committed={AUDIO: 6})
    await consumer.perform_seek()
    got = [o for _, o in await drain(consumer, rounds=1)]
    assert got == [6, 7, 8]
    consumer.positions[AUDIO] = 15  # records 9..14 fetched and dropped upstream
    got += [o for _, o in await drain(consumer)]
    assert got == list(range(6, 20))
    assert consumer.seeks == [(AUDIO, 9)]
    assert consumer.gaps_refetched == 1


async def test_a_record_delivered_again_is_dropped() -> None:
    consumer = Consumer(logs={AUDIO: 10}, committed={AUDIO: 0})
    await consumer.perform_seek()
    got = [o for _, o in await drain(consumer, rounds=1)]
    consumer.positions[AUDIO] = 1  # faust seeks back to the committed offset mid-assignment
    await consumer.perform_seek()  # ... and so does a flow-stopped fetch
    consumer.positions[AUDIO] = 1
    got += [o for _, o in await drain(consumer)]
    assert got == list(range(10))


async def test_after_a_revoke_the_next_owner_position_is_expected() -> None:
    consumer = Consumer(logs={AUDIO: 10}, committed={AUDIO: 0})
    await consumer.perform_seek()
    await drain(consumer, rounds=2)
    await consumer.on_partitions_revoked({AUDIO})
    consumer.committed[AUDIO] = 4  # the partition comes back, committed at 4
    await consumer.perform_seek()
    assert [o for _, o in await drain(consumer)] == list(range(4, 10))


async def test_changelogs_and_partitions_without_commits_are_passed_through() -> None:
    consumer = Consumer(logs={CHANGELOG: 10, AUDIO: 5})
    await consumer.perform_seek()  # nothing committed: the first record read sets the pace
    consumer.positions[CHANGELOG] = 7  # recovery seeks changelogs on its own
    consumer.positions[AUDIO] = 2
    got = await drain(consumer)
    assert [o for tp, o in got if tp == CHANGELOG] == [7, 8, 9]
    assert [o for tp, o in got if tp == AUDIO] == [2, 3, 4]
    assert consumer.seeks == []
