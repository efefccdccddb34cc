"""analytics.delivery: a failed send is sent again until acknowledged, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from analytics import delivery
from analytics.delivery import deliver, deliver_all


class FlakyTopic:
    """Fails the first ``failures`` sends (half at send time, half in the ack future)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.delivered: list[bytes] = []
        self.attempts = 0

    def get_topic_name(self) -> str:
        return "flaky"

    async def send(self, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
        self.attempts += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failures > 0:
            self.failures -= 1
            if self.failures % 2:
                raise KafkaTimeoutError()
            fut.set_exception(KafkaTimeoutError())
            return fut
        self.delivered.append(value)
        fut.set_result(None)
        return fut


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "BACKOFF_S", 0.001)
    monkeypatch.setattr(delivery, "BACKOFF_MAX_S", 0.002)


async def test_a_record_is_resent_until_acknowledged() -> None:
    topic = FlakyTopic(failures=5)
    await deliver(topic, b"k", b"v")
    assert topic.delivered == [b"v"]
    assert topic.attempts == 6


async def test_every_record_of_a_batch_is_delivered_once() -> None:
    topic = FlakyTopic(failures=3)
    await deliver_all([(topic, b"k", f"v{i}".encode()) for i in range(10)])
    assert sorted(topic.delivered) == sorted(f"v{i}".encode() for i in range(10))
    assert len(topic.delivered) == 10


async def test_a_bug_is_raised_not_retried() -> None:
    class Broken(FlakyTopic):
        async def send(self, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            fut.set_exception(ValueError("bad value"))
            return fut

    with pytest.raises(ValueError, match="bad value"):
        await deliver(Broken(0), None, b"v")
