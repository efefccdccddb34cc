"""Settings parse strictly and honour KAFKA_BOOTSTRAP_SERVERS; the CLI lists its commands."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentstream.cli import build_parser
from agentstream.commands.topics import TopicsSettings
from agentstream.stack.settings import BrokerSettings, UpSettings
from schemas.settings import DEFAULT_BOOTSTRAP

pytestmark = pytest.mark.unit


def test_defaults() -> None:
    assert TopicsSettings().bootstrap_servers == DEFAULT_BOOTSTRAP == "127.0.0.1:9092"
    assert BrokerSettings().port == 9092


def test_kafka_bootstrap_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    assert TopicsSettings().bootstrap_servers == "kafka:9092"


@pytest.mark.parametrize(("text", "value"), [("false", False), ("0", False), ("true", True)])
def test_booleans_parse_strictly(monkeypatch: pytest.MonkeyPatch, text: str, value: bool) -> None:
    monkeypatch.setenv("AGENTSTREAM_UP_EMBEDDED_BROKER", text)
    assert UpSettings().embedded_broker is value


def test_garbage_boolean_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSTREAM_UP_EMBEDDED_BROKER", "maybe")
    with pytest.raises(ValidationError):
        UpSettings()


def test_settings_are_frozen() -> None:
    settings = BrokerSettings()
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]


def test_cli_has_foundation_commands() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"up", "broker", "topics"} <= set(sub.choices)  # type: ignore[arg-type]
