"""The shipped Grafana dashboard and Prometheus config, checked against the code (no containers)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client import generate_latest

from analytics.backlog import AudioBacklog, BacklogCollector
from analytics.metrics import DecodeCollector, WorkerMetrics
from ingest.metrics import IngestStats, make_registry
from routing.metrics import RoutingMetrics

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "agentstream.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

# What the issue asks the dashboard to cover, as words its panel titles must contain.
COVERED = (
    "active calls",
    "frames per second",
    "asr lag",
    "asr backlog",
    "speech end to decision",
    "passthru latency",
    "passthru answers given before every utterance was decided",
    "escalation rate by rule",
    "dead letters by stage",
)


def _panels() -> list[dict[str, Any]]:
    data = orjson.loads(DASHBOARD.read_bytes())
    assert data["uid"] == "agentstream"
    panels = [p for p in data["panels"] if p["type"] != "row"]
    assert panels
    return panels


def exprs() -> list[str]:
    return [t["expr"] for p in _panels() for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (functions, labels and keywords left out)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\((?:le|rule|stage)\)", "", expr)
    words = set(re.findall(r"[a-z_][a-z0-9_]*", expr))
    keywords = {"sum", "by", "rate", "max", "histogram_quantile", "le", "rule", "stage"}
    return {w for w in words - keywords if "_" in w}


def test_dashboard_covers_what_operators_watch() -> None:
    titles = " | ".join(p["title"].lower() for p in _panels())
    for words in COVERED:
        assert words in titles, f"no panel about {words!r}"


def test_every_panel_queries_the_provisioned_datasource() -> None:
    sources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    uids = {s["uid"] for s in sources}
    for panel in _panels():
        assert panel["datasource"]["uid"] in uids
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_prometheus_scrapes_every_service_on_its_port() -> None:
    jobs = {j["job_name"]: j for j in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]}
    assert set(jobs) == {"ingest", "routing", "worker"}
    assert jobs["ingest"]["static_configs"][0]["targets"] == ["ingest:8080"]
    assert jobs["routing"]["static_configs"][0]["targets"] == ["routing:8081"]
    assert jobs["worker"]["dns_sd_configs"][0]["names"] == ["worker"]


def test_compose_runs_prometheus_and_grafana_with_these_files() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    mounted = [
        v.split(":")[0]
        for name in ("prometheus", "grafana")
        for v in services[name]["volumes"]
        if v.startswith("./")
    ]
    assert mounted and all((ROOT / m).exists() for m in mounted)
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def exposed_metric_names() -> set[str]:
    """Every sample name the three services can expose (from their own registries)."""
    names: set[str] = set()
    worker = WorkerMetrics().registry  # plus the collectors the worker registers at build
    worker.register(BacklogCollector(AudioBacklog()))
    worker.register(DecodeCollector(lambda: defaultdict(int)))
    for registry in (
        RoutingMetrics().registry,
        worker,
        make_registry(IngestStats()),
    ):
        for line in generate_latest(registry).decode().splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split()
                names.add(name)
                if kind == "counter":
                    names.add(f"{name.removesuffix('_total')}_total")
                if kind == "histogram":
                    names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def test_every_metric_the_dashboard_queries_is_exposed() -> None:
    exposed = exposed_metric_names()
    wanted = set().union(*(metric_names(e) for e in exprs()))
    assert wanted and not wanted - exposed, sorted(wanted - exposed)
