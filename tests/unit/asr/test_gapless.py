"""The worker's consumer never hands faust a record past a gap: it seeks back and reads again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from analytics import gapless
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
    """Stands in for faust's Consumer: a log per partition, an aiokafka-like fetch position
    (moved past each batch as it is returned) and faust's read offset (set by the drain loop
    for each record it hands on, and by seeks)."""

    logs: dict[TP, int]
    positions: dict[TP, int] = field(default_factory=dict)
    committed: dict[TP, int] = field(default_factory=dict)
    seeks: list[tuple[TP, int]] = field(default_factory=list)
    _read_offset: dict[TP, int | None] = field(default_factory=dict)
    batch: int = 3

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        batches = {}
        for tp, end in self.logs.items():
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
        self._read_offset[tp] = offset

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._read_offset.pop(tp, None)


class Consumer(GaplessMixin, FakeConsumer):
    def _fetch_positions(self) -> dict[Any, int]:
        return dict(self.positions)


AUDIO = TP("agentstream.audio", 2)
CHANGELOG = TP("app-agentstream-callstate-changelog", 2)


async def drain(
    consumer: Any, rounds: int = 40, drop: Callable[[int], bool] = lambda _: False
) -> list[tuple[TP, int]]:
    """faust's drain loop: hands each record on and moves its read offset (unless ``drop``:
    a record faust discards, as in a flow stop mid-batch)."""
    got: list[tuple[TP, int]] = []
    for _ in range(rounds):
        async for tp, message in consumer.getmany(timeout=0):
            read = consumer._read_offset.get(tp)
            if read is not None and message.offset < read:
                continue  # faust drops what is behind its read offset
            if drop(message.offset):
                continue
            got.append((tp, message.offset))
            consumer._read_offset[tp] = message.offset
    return got


def drops_once(offsets: set[int]) -> Callable[[int], bool]:
    """faust discards each of these records once (its flow stopped), then takes them."""
    dropped = set(offsets)

    def drop(offset: int) -> bool:
        if offset in dropped:
            dropped.discard(offset)
            return True
        return False

    return drop


async def test_a_jump_past_unread_records_is_read_again_in_order() -> None:
    consumer = Consumer(logs={AUDIO: 20}, committed={AUDIO: 6})
    await consumer.perform_seek()
    got = [o for _, o in await drain(consumer, rounds=1)]
    assert got == [6, 7, 8]
    consumer.positions[AUDIO] = 15  # the client moved on past 9..14
    got += [o for _, o in await drain(consumer)]
    assert got == list(range(6, 20))
    assert consumer.seeks == [(AUDIO, 9)]
    assert consumer.gaps_refetched == 1


async def test_records_faust_dropped_are_read_again() -> None:
    consumer = Consumer(logs={AUDIO: 12}, committed={AUDIO: 0})
    await consumer.perform_seek()
    drop_once = drops_once({3, 4, 5})
    seen: list[int] = []
    for _ in range(40):
        seen += [o for _, o in await drain(consumer, rounds=1, drop=drop_once)]
    assert seen == list(range(12))
    assert consumer.seeks == [(AUDIO, 3), (AUDIO, 4), (AUDIO, 5)]  # each drop read again


async def test_the_first_record_after_a_seek_is_the_sought_one() -> None:
    consumer = Consumer(logs={AUDIO: 10}, committed={AUDIO: 0})
    await consumer.perform_seek()
    await drain(consumer, rounds=2)
    await consumer.on_partitions_revoked({AUDIO})
    consumer.committed[AUDIO] = 4  # the partition comes back, committed at 4
    await consumer.perform_seek()
    assert [o for _, o in await drain(consumer)] == list(range(4, 10))
    assert consumer.seeks == []


async def test_changelogs_and_partitions_without_a_read_offset_pass_through() -> None:
    consumer = Consumer(logs={CHANGELOG: 10, AUDIO: 5})
    await consumer.perform_seek()  # nothing committed: the first record read sets the pace
    consumer.positions[CHANGELOG] = 7  # recovery seeks changelogs on its own
    consumer._read_offset[CHANGELOG] = 2
    consumer.positions[AUDIO] = 2
    got = await drain(consumer)
    assert [o for tp, o in got if tp == CHANGELOG] == [7, 8, 9]
    assert [o for tp, o in got if tp == AUDIO] == [2, 3, 4]
    assert consumer.seeks == []


async def test_records_dropped_at_a_partition_end_are_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gapless, "STRANDED_S", 0.0)
    consumer = Consumer(logs={AUDIO: 10}, committed={AUDIO: 0})
    await consumer.perform_seek()
    drop_once = drops_once({7, 8, 9})  # the last records: nothing after them shows the gap
    seen: list[int] = []
    for _ in range(10):
        seen += [o for _, o in await drain(consumer, rounds=1, drop=drop_once)]
    assert seen == list(range(10))
    assert consumer.seeks[0] == (AUDIO, 7)


async def test_a_seek_holds_when_faust_moves_its_read_offset_past_it() -> None:
    """The agent seeks back while faust's drain loop waits to hand an older record to the full
    agent queue; once that record is taken, faust sets its read offset past the seek, and the
    records read again would be dropped as already seen. The seek holds until served."""
    consumer = Consumer(logs={AUDIO: 20}, committed={AUDIO: 0})
    await consumer.perform_seek()
    assert [o for _, o in await drain(consumer, rounds=3)] == list(range(9))
    await consumer.seek_in_thread(AUDIO, 3)
    consumer._read_offset[AUDIO] = 8  # the drain took record 8 after the seek
    assert [o for _, o in await drain(consumer)] == list(range(3, 20))


async def test_in_flight_records_past_a_seek_are_withheld_until_it_is_served() -> None:
    consumer = Consumer(logs={AUDIO: 20}, committed={AUDIO: 0})
    await consumer.perform_seek()
    await drain(consumer, rounds=2)  # 0..5 taken, the client is at 6
    await consumer.seek_in_thread(AUDIO, 2)
    consumer.positions[AUDIO] = 9  # a batch fetched before the seek still arrives: 9..11
    got = [o for _, o in await drain(consumer)]
    assert got == list(range(2, 20))
    assert consumer.seeks[0] == (AUDIO, 2)


async def test_an_uncommitted_partition_whose_records_were_all_dropped_is_read_from_its_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A successor takes over a partition nothing was committed on (its owner was killed
    before its first commit); faust drops every record it fetched, and none comes after them.
    Without a read offset nothing showed the gap: the partition's start is asked and expected."""
    monkeypatch.setattr(gapless, "STRANDED_S", 0.0)
    consumer = Consumer(logs={AUDIO: 10})
    await consumer.perform_seek()  # nothing committed: no read offset

    async def start(tp: TP) -> int:
        return 0

    monkeypatch.setattr(consumer, "broker_start_offset", start)
    drop_once = drops_once(set(range(10)))
    seen: list[int] = []
    for _ in range(12):
        seen += [o for _, o in await drain(consumer, rounds=1, drop=drop_once)]
    assert seen == list(range(10))
    assert consumer.seeks[0] == (AUDIO, 0)


async def test_a_partition_faust_stopped_fetching_is_given_back_and_read_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """faust marked the partition buffered (its queue was full) and the callback that gives it
    back was lost: it has records past faust's read offset but none comes, for good."""
    monkeypatch.setattr(gapless, "STRANDED_S", 0.0)
    monkeypatch.setattr(gapless, "STALLED_S", 0.0)

    class Stalling(Consumer):
        _buffered_partitions: set[TP]
        _active_partitions: set[TP]
        _paused_partitions: set[TP]

        def _highwaters(self) -> dict[Any, int]:
            return dict(self.logs)

        def on_buffer_drop(self, tp: TP) -> None:
            self._buffered_partitions.discard(tp)
            self._active_partitions.add(tp)

    consumer = Stalling(logs={AUDIO: 10}, committed={AUDIO: 0})
    consumer._buffered_partitions, consumer._active_partitions = set(), {AUDIO}
    consumer._paused_partitions = set()
    await consumer.perform_seek()
    assert [o for _, o in await drain(consumer, rounds=1)] == [0, 1, 2]
    consumer._buffered_partitions, consumer._active_partitions = {AUDIO}, set()
    real_fetch = FakeConsumer.getmany

    async def fetch_active_only(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        async for tp, message in real_fetch(self, timeout):
            if tp in self._active_partitions:
                yield tp, message

    monkeypatch.setattr(FakeConsumer, "getmany", fetch_active_only)
    consumer.positions[AUDIO] = 3
    seen: list[int] = []
    for _ in range(8):
        seen += [o for _, o in await drain(consumer, rounds=1)]
    assert seen == list(range(3, 10))
    assert AUDIO in consumer._active_partitions
    assert (AUDIO, 3) in consumer.seeks
