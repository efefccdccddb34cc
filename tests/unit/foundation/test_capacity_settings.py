"""Capacity knobs: the paced fetch wait, where its settings reach, and `up --workers auto`."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentstream.cli import build_parser
from agentstream.stack.settings import UpSettings, worker_count
from analytics.app import QuietStream, make_app
from analytics.settings import WorkerSettings
from ingest.server import IngestServer
from ingest.settings import IngestSettings
from routing.service import RoutingService
from routing.settings import RoutingSettings
from schemas.fetchwait import FetchPacer

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeFetcher:
    _fetch_max_wait_ms = 1500


class FakeConsumer:
    def __init__(self) -> None:
        self._fetcher = FakeFetcher()


def test_pacer_is_short_while_records_flow_and_long_once_idle() -> None:
    clock = FakeClock()
    pacer = FetchPacer(30, 1000, 10.0, clock=clock)
    assert pacer.wait_ms() == 1000  # nothing read yet: idle
    pacer.saw_records()
    assert pacer.wait_ms() == 30
    clock.now += 9.9
    assert pacer.wait_ms() == 30
    clock.now += 0.2
    assert pacer.idle
    assert pacer.wait_ms() == 1000


def test_pacer_stays_short_while_its_owner_is_busy() -> None:
    clock = FakeClock()
    live: list[str] = []
    pacer = FetchPacer(30, 1000, 10.0, busy=lambda: bool(live), clock=clock)
    assert pacer.wait_ms() == 1000
    live.append("call")
    assert pacer.wait_ms() == 30
    live.clear()
    assert pacer.wait_ms() == 1000


def test_pacer_never_waits_less_idle_than_active() -> None:
    pacer = FetchPacer(200, 50, 1.0)
    assert pacer.wait_ms() == 200  # idle wait below the active one: pacing off


def test_pacer_sets_the_wait_of_the_next_fetch() -> None:
    consumer = FakeConsumer()
    pacer = FetchPacer(30, 800, 5.0)
    assert pacer.apply(consumer) == 800
    assert consumer._fetcher._fetch_max_wait_ms == 800
    pacer.saw_records()
    pacer.apply(consumer)
    assert consumer._fetcher._fetch_max_wait_ms == 30
    assert pacer.apply(object()) == 30  # not started yet (no fetcher): nothing to set


def test_kafka_fields_carry_the_idle_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSTREAM_ROUTING_IDLE_FETCH_MAX_WAIT_MS", "2500")
    monkeypatch.setenv("AGENTSTREAM_ROUTING_FETCH_IDLE_AFTER_S", "7")
    pacer = FetchPacer.from_settings(RoutingSettings())
    assert (pacer.active_ms, pacer.idle_ms, pacer.idle_after_s) == (30, 2500, 7.0)
    with pytest.raises(ValidationError):
        RoutingSettings(idle_fetch_max_wait_ms=-1)


def test_routing_consumers_share_one_pacer() -> None:
    service = RoutingService(RoutingSettings(port=0, idle_fetch_max_wait_ms=1234))
    assert service.reader.pacer is service.evaluator_loop.pacer
    assert service.reader.pacer.idle_ms == 1234


def test_ingest_decisions_are_fast_while_voicebot_calls_are_live() -> None:
    server = IngestServer(IngestSettings(port=0))
    pacer = server.decisions.pacer
    assert pacer.idle
    server.live.by_sid["CA1"] = object()  # type: ignore[assignment]
    assert not pacer.idle
    assert pacer.wait_ms() == server.settings.fetch_max_wait_ms


def test_worker_app_gets_the_paced_transport_and_quiet_stream() -> None:
    settings = WorkerSettings(fetch_max_wait_ms=25, idle_fetch_max_wait_ms=900)
    app = make_app(settings)
    thread = app._new_transport().Consumer.thread_class
    assert (thread.fetch_max_wait_ms, thread.idle_fetch_max_wait_ms) == (25, 900)
    assert thread.fetch_idle_after_s == settings.fetch_idle_after_s
    assert app.conf.Stream is QuietStream


def test_auto_workers_is_one_per_two_cores_up_to_the_partitions() -> None:
    assert worker_count("auto", available=2) == 1
    assert worker_count("auto", available=3) == 1
    assert worker_count("auto", available=8) == 4
    assert worker_count("auto", available=64, partitions=8) == 8
    assert worker_count("auto", available=1) == 1
    assert worker_count(3, available=64) == 3
    assert worker_count("auto") >= 1
    assert UpSettings().workers == "auto"


def test_up_workers_env_and_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSTREAM_UP_WORKERS", "3")
    assert UpSettings().workers == 3
    monkeypatch.setenv("AGENTSTREAM_UP_WORKERS", "0")
    with pytest.raises(ValidationError):
        UpSettings()
    parser = build_parser()
    assert parser.parse_args(["up", "--workers", "auto"]).workers == "auto"
    assert parser.parse_args(["up", "--workers", "4"]).workers == 4
    for bad in ("0", "-2", "many"):
        with pytest.raises(SystemExit):
            parser.parse_args(["up", "--workers", bad])


def test_up_help_names_auto(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--help"])
    assert "auto" in capsys.readouterr().out
