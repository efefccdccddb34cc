"""The ASR backlog gauge: how far behind real time the worker takes each live call's audio."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from analytics.backlog import AudioBacklog, BacklogCollector

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_lag_is_the_age_of_each_calls_latest_frame() -> None:
    clock = FakeClock()
    backlog = AudioBacklog(clock, forget_after_s=30, behind_s=2)
    assert backlog.max_lag_ms() == 0
    assert backlog.observe("CA1", 999_900) == 100
    assert backlog.observe("CA2", 996_500) == 3_500
    assert (backlog.max_lag_ms(), backlog.calls_behind()) == (3_500, 1)
    backlog.observe("CA2", 999_950)  # caught up
    assert (backlog.max_lag_ms(), backlog.calls_behind()) == (100, 0)
    assert backlog.observe("CA3", 1_000_500) == 0  # clocks a little apart: never negative


def test_calls_are_forgotten_on_stop_or_after_a_quiet_spell() -> None:
    clock = FakeClock()
    backlog = AudioBacklog(clock, forget_after_s=30)
    backlog.observe("CA1", 990_000)
    backlog.observe("CA2", 995_000)
    backlog.forget("CA1")
    assert backlog.max_lag_ms() == 5_000
    clock.now += 31
    assert backlog.max_lag_ms() == 0


def test_prometheus_view() -> None:
    clock = FakeClock()
    backlog = AudioBacklog(clock, behind_s=1)
    backlog.observe("CA1", 997_500)
    backlog.observe("CA2", 999_800)
    registry = CollectorRegistry()
    registry.register(BacklogCollector(backlog))
    text = generate_latest(registry).decode()
    assert "agentstream_worker_audio_lag_seconds 2.5" in text
    assert "agentstream_worker_calls_behind 1.0" in text
    assert "agentstream_worker_live_calls 2.0" in text
