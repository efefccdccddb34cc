"""`ingest --processes N` without sockets: the settings, each process's share of max_calls, and
what /health and /metrics say about which process answered."""

from __future__ import annotations

import argparse
import os
import types

import orjson
import pytest
from pydantic import ValidationError
from websockets.datastructures import Headers
from websockets.http11 import Request

from agentstream.cli import build_parser
from agentstream.commands.ingest import run
from ingest.metrics import render
from ingest.server import IngestServer
from ingest.settings import MAX_AUTO_PROCESSES, IngestSettings

pytestmark = pytest.mark.unit


def _get(server: IngestServer, path: str, stats_port: bool = False) -> tuple[int, bytes]:
    request = Request(path, Headers())
    handle = server._process_stats_request if stats_port else server._process_request
    peer = types.SimpleNamespace(remote_address=("127.0.0.1", 40000))
    response = handle(peer, request)  # type: ignore[arg-type]
    assert response is not None
    return response.status_code, bytes(response.body)


def test_one_process_is_the_default_and_unchanged() -> None:
    settings = IngestSettings()
    assert settings.processes == 1 and settings.process_count() == 1
    assert settings.process_index is None
    assert settings.calls_per_process == settings.max_calls == 2000
    assert not settings.binds_reuse_port
    assert settings.stats_port is None
    assert IngestSettings(reuse_port=True).binds_reuse_port  # asked for by itself


@pytest.mark.parametrize(("text", "count"), [("1", 1), ("3", 3), ("16", 16)])
def test_processes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, text: str, count: int
) -> None:
    monkeypatch.setenv("AGENTSTREAM_INGEST_PROCESSES", text)
    assert IngestSettings().process_count(available=64) == count


@pytest.mark.parametrize("text", ["0", "-2", "many", "1.5", ""])
def test_bad_processes_are_refused(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("AGENTSTREAM_INGEST_PROCESSES", text)
    with pytest.raises(ValidationError):
        IngestSettings()


@pytest.mark.parametrize(
    ("available", "count"), [(1, 1), (2, 2), (12, 12), (64, MAX_AUTO_PROCESSES)]
)
def test_auto_is_one_per_core_capped(
    monkeypatch: pytest.MonkeyPatch, available: int, count: int
) -> None:
    monkeypatch.setenv("AGENTSTREAM_INGEST_PROCESSES", "auto")
    settings = IngestSettings()
    assert settings.processes == "auto"
    assert settings.process_count(available=available) == count
    assert settings.process_count() == min(len(os.sched_getaffinity(0)), MAX_AUTO_PROCESSES)


@pytest.mark.parametrize(
    ("max_calls", "processes", "each"),
    [(2000, 2, 1000), (2000, 3, 667), (2001, 2, 1001), (5, 4, 2), (1, 4, 1), (7, 1, 7)],
)
def test_each_process_takes_its_share_of_max_calls(
    max_calls: int, processes: int, each: int
) -> None:
    shares = [
        IngestSettings(max_calls=max_calls, processes=processes, process_index=i).calls_per_process
        for i in range(processes)
    ]
    assert shares == [each] * processes
    # the processes together take every call max_calls allows, and less than one more each
    assert max_calls <= sum(shares) < max_calls + processes
    assert IngestSettings(max_calls=max_calls, processes=processes).calls_each(processes) == each


def test_the_supervisor_itself_keeps_the_whole_limit() -> None:
    assert IngestSettings(max_calls=10, processes=4).calls_per_process == 10


def test_process_index_must_be_below_processes() -> None:
    with pytest.raises(ValidationError):
        IngestSettings(processes=2, process_index=2)
    with pytest.raises(ValidationError):
        IngestSettings(process_index=-1)
    assert IngestSettings(processes=2, process_index=1).binds_reuse_port


def test_stats_port_is_base_plus_index_only_in_a_process_of_several() -> None:
    assert IngestSettings(processes=3, process_index=2, child_metrics_port=9100).stats_port == 9102
    assert IngestSettings(processes=3, process_index=2).stats_port is None  # 0: off
    assert IngestSettings(processes=3, child_metrics_port=9100).stats_port is None  # supervisor


def test_a_process_of_several_says_which_it_is() -> None:
    server = IngestServer(
        IngestSettings(port=0, processes=2, process_index=1, max_calls=3, child_metrics_port=9)
    )
    assert server.max_calls == 2
    for stats_port in (False, True):
        status, body = _get(server, "/health", stats_port)
        assert status == 200
        health = orjson.loads(body)
        assert (health["process_index"], health["pid"]) == (1, os.getpid())
        status, body = _get(server, "/metrics", stats_port)
        assert status == 200 and b"\ningest_process_index 1.0\n" in body
    assert _get(server, "/stream", stats_port=True)[0] == 404  # the stats port upgrades nothing
    assert _get(server, "/exotel/stream-url", stats_port=True)[0] == 404


def test_a_single_process_health_and_metrics_are_as_before() -> None:
    server = IngestServer(IngestSettings(port=0))
    assert server.max_calls == 2000
    status, body = _get(server, "/health")
    assert status == 200
    assert set(orjson.loads(body)) == {"status", "active_calls", "buffer_bytes", "decisions_ready"}
    assert b"ingest_process_index" not in render(server.registry)


def test_cli_takes_processes() -> None:
    parser = build_parser()
    assert parser.parse_args(["ingest", "--processes", "auto"]).processes == "auto"
    assert parser.parse_args(["ingest", "--processes", "4"]).processes == 4
    assert parser.parse_args(["ingest"]).processes is None  # the setting decides
    with pytest.raises(SystemExit):
        parser.parse_args(["ingest", "--processes", "0"])


def _args(**kw: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "host": None,
        "port": None,
        "bootstrap": None,
        "processes": None,
        "process_index": None,
        "ready_fd": None,
        "no_create_topics": True,
        "log_level": "INFO",
        **kw,
    }
    return argparse.Namespace(**values)


def test_several_processes_need_a_fixed_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(_args(port=0, processes=2)) == 2
    assert "needs a fixed port" in capsys.readouterr().err


def test_bad_settings_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(_args(processes=2, process_index=5)) == 2
    assert "process_index 5 is not below processes 2" in capsys.readouterr().err
