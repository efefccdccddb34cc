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


def test_falling_behind_is_logged_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    backlog = AudioBacklog(clock, forget_after_s=30, behind_s=2, warn_s=10)
    with caplog.at_level("INFO", logger="analytics.backlog"):
        backlog.observe("CA1", 995_000)  # 5 s behind: the gauge says so, the log does not
        assert not caplog.records
        backlog.observe("CA1", 988_000)  # 12 s
        backlog.observe("CA2", 985_000)  # 15 s: the same episode
        [warning] = caplog.records
        assert warning.levelname == "WARNING" and "12.0 s" in warning.getMessage()
        backlog.observe("CA1", 999_900)  # caught up, CA2 still behind
        assert len(caplog.records) == 1
        clock.now += 1.5
        backlog.observe("CA2", 1_001_400)  # every live call under 2 s
        assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
        backlog.observe("CA1", 1_001_500 - 11_000)  # a new episode
        assert [r.levelname for r in caplog.records] == ["WARNING", "INFO", "WARNING"]
