"""What the worker tells the transcription service of a partition read again: the consumer's
(:mod:`analytics.gapless`) and the audio agent's (:mod:`analytics.contiguity`) state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from analytics import gapless
from analytics.contiguity import Contiguity
from analytics.settings import WorkerSettings
from analytics.worker import build_worker, partition_rereading
from tests.unit.asr.asr_fakes import FakeRecognizer
from tests.unit.asr.test_gapless import Consumer, FakeConsumer, Message, drain

pytestmark = pytest.mark.unit

TOPIC = "agentstream.audio"
AUDIO = TP(TOPIC, 2)  # as faust and aiokafka name a partition


async def test_a_gap_the_consumer_reads_again_until_its_first_record_comes() -> None:
    consumer = Consumer(logs={AUDIO: 20}, committed={AUDIO: 6})
    rereading = partition_rereading(TOPIC, Contiguity(), lambda: consumer)
    await consumer.perform_seek()
    await drain(consumer, rounds=1)  # 6, 7, 8
    assert not rereading(2)
    consumer.positions[AUDIO] = 15  # the client moved past 9..14: withheld, sought back
    assert await drain(consumer, rounds=1) == []
    assert rereading(2) and not rereading(1)
    assert [o for _, o in await drain(consumer, rounds=1)] == [9, 10, 11]
    assert not rereading(2)


async def test_a_seek_not_served_yet() -> None:
    consumer = Consumer(logs={AUDIO: 20}, committed={AUDIO: 0})
    rereading = partition_rereading(TOPIC, Contiguity(), lambda: consumer)
    await consumer.perform_seek()
    await drain(consumer, rounds=2)
    await consumer.seek_in_thread(AUDIO, 2)  # the agent's seek (contiguity, reread_overdue)
    assert rereading(2)
    await drain(consumer, rounds=1)
    assert not rereading(2)


@dataclass
class Pausable(FakeConsumer):
    paused: bool = False  # faust stopped fetching the partition

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        if not self.paused:
            async for item in super().getmany(timeout):
                yield item


class Stalling(gapless.GaplessMixin, Pausable):
    def _fetch_positions(self) -> dict[Any, int]:
        return dict(self.positions)

    def _highwaters(self) -> dict[Any, int]:
        return dict(self.logs)


async def test_a_partition_that_stops_moving_with_records_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen after a takeover: two records taken, then nothing; the re-read starts only after
    ``STALLED_S``, but the partition counts as read again from the second check on."""
    monkeypatch.setattr(gapless, "STRANDED_S", 0.0)  # a check at every fetch
    consumer = Stalling(logs={AUDIO: 10}, committed={AUDIO: 0})
    rereading = partition_rereading(TOPIC, Contiguity(), lambda: consumer)
    await consumer.perform_seek()
    await drain(consumer, rounds=1)  # 0, 1, 2
    assert not rereading(2)  # records wait, but it moved since the last check
    consumer.paused = True
    await drain(consumer, rounds=2)
    assert rereading(2)  # no progress between two checks
    consumer.paused = False
    await drain(consumer, rounds=2)
    assert not rereading(2)


def test_a_gap_the_audio_agent_asked_to_read_again() -> None:
    order = Contiguity()
    consumer = Consumer(logs={AUDIO: 0})
    rereading = partition_rereading(TOPIC, order, lambda: consumer)
    order.begin(AUDIO, 10)
    assert order.check(AUDIO, 10)[0] == "ok"
    assert not rereading(2)
    assert order.check(AUDIO, 40, now=1.0)[0] == "gap"
    assert rereading(2) and not rereading(3)
    assert order.overdue(now=5.0, after_s=1.0)  # asked again: still waiting
    assert rereading(2)
    assert order.check(AUDIO, 11)[0] == "ok"
    assert not rereading(2)


async def test_the_worker_gives_its_service_the_partitions_state(tmp_path: Path) -> None:
    settings = WorkerSettings(datadir=tmp_path, metrics_enabled=False)
    worker = build_worker(
        settings, recognizer=FakeRecognizer(), use_vad_model=False, with_scoring=False
    )
    rereading = worker.service.stops.rereading
    assert not rereading(2)
    worker.app.consumer._gapless_state()[3][AUDIO] = 7  # a seek to 7 not served yet
    assert rereading(2) and not rereading(1)
