"""Settings of the call simulator (``agentstream simulate``, env prefix ``AGENTSTREAM_SIMULATOR_``).

Built once by the command and passed down; command-line options override them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.settings import KafkaFields

DEFAULT_SCENARIOS = Path("demo/scenarios.yaml")


class SimulatorSettings(KafkaFields, BaseSettings):
    """Where the simulator sends calls and reads results; every field is
    ``AGENTSTREAM_SIMULATOR_<NAME>`` (``KAFKA_BOOTSTRAP_SERVERS`` for the broker)."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTSTREAM_SIMULATOR_", frozen=True, populate_by_name=True
    )

    ingest_url: str = Field("ws://127.0.0.1:8080", description="ingest base ws(s):// URL")
    routing_url: str = Field("http://127.0.0.1:8081", description="routing base http(s):// URL")
    basic_auth: SecretStr | None = Field(
        None, description="'KEY:TOKEN' sent as Basic auth (as in wss://KEY:TOKEN@host)"
    )
    scenarios: Path = Field(DEFAULT_SCENARIOS, description="played when no input is given")
    wait_ready_s: float = Field(
        180.0, ge=0, description="wait this long for routing's /ready (whole pipeline); 0 = no"
    )
    settle_timeout_s: float = Field(
        15.0, ge=0, description="after the last call, wait this long for decisions"
    )
