"""Settings of the routing service (``agentstream routing``), env prefix ``AGENTSTREAM_ROUTING_``.

Built once in ``main()`` and passed down; nothing else reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.auth import IpNetwork, parse_credentials, parse_networks
from schemas.settings import KafkaFields


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class RoutingSettings(KafkaFields, BaseSettings):
    """Everything one routing instance needs; several instances share one consumer group."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTSTREAM_ROUTING_",
        frozen=True,
        populate_by_name=True,
        extra="ignore",
    )

    host: str = Field("0.0.0.0", description="HTTP listen address")  # noqa: S104
    port: int = Field(8081, ge=0, le=65535, description="HTTP listen port (0 = a free port)")
    rules_path: Path | None = Field(
        None, description="rules file (YAML, or TOML if it ends in .toml); None = shipped example"
    )
    rules_poll_s: float = Field(
        1.0, ge=0, description="how often to check the rules file for changes; 0 = SIGHUP only"
    )
    passthru_grace_ms: int = Field(
        300,
        ge=0,
        le=5000,
        description="wait at most this long after the stream stopped for a pending utterance",
    )
    passthru_complete_wait_ms: int = Field(
        1500,
        ge=0,
        le=120_000,
        description="Passthru waits at most this long for the call's analysis to be complete",
    )
    ready_requires_workers: bool = Field(
        True, description="/ready also needs live analytics workers holding every audio partition"
    )
    consumer_group: str = Field(
        "agentstream-routing", description="group that evaluates scores (one owner per call)"
    )
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    max_score_age_s: float = Field(
        600.0, gt=0, description="scores older than this are folded into state but not decided"
    )
    publish_continue: bool = Field(
        True, description="publish a 'continue' decision for every scored utterance"
    )
    tick_interval_ms: int = Field(
        250, ge=10, description="how often silence / max-duration deadlines are checked"
    )
    state_idle_s: float = Field(
        7200.0, gt=0, description="forget a call not heard of for this long"
    )
    rebuild_timeout_s: float = Field(
        120.0,
        gt=0,
        description="rebuild at most this long; then answer and decide from what was read",
    )
    producer_linger_ms: int = Field(2, ge=0)
    commit_interval_s: float = Field(
        1.0, gt=0, description="how often acknowledged evaluator offsets are committed"
    )
    record_callbacks: bool = Field(
        True, description="publish every callback's parameters on agentstream.calls"
    )

    # --- who may call (docs/security.md) ----------------------------------------------------
    basic_auth: SecretStr | None = Field(
        None,
        description="'KEY:TOKEN[,KEY2:TOKEN2]' accepted as HTTP Basic auth (as ingest); "
        "unset with no allow_ips = auth off",
    )
    auth_tenants: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description='JSON {"KEY": ["tenant", ...]}: that credential reads and steers only the '
        "calls of these tenants (a key not listed: every tenant)",
    )
    allow_ips: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated IPs/CIDRs allowed to call; empty = any address"
    )
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="comma-separated IPs/CIDRs of TLS-terminating proxies whose "
        "X-Forwarded-For names the client for the allow-list; empty = never read it",
    )
    auth_probes: bool = Field(
        False, description="also require auth / allow-list for /health, /ready and /metrics"
    )

    # --- dashboard and summaries ------------------------------------------------------------
    dashboard: bool = Field(True, description="serve the supervisor dashboard at /dashboard")
    dashboard_lookback_s: float = Field(
        3600.0, gt=0, description="the dashboard starts reading this far back"
    )
    dashboard_interval_ms: int = Field(
        250, ge=20, description="at most one update to the dashboard pages this often"
    )
    summary_settle_ms: int = Field(
        2000, ge=0, description="publish a call's summary this long after its stream stopped"
    )
    summary_idle_s: float = Field(
        900.0, gt=0, description="summarise a call that never stopped after this long unheard"
    )

    @field_validator("allow_ips", "trusted_proxies", mode="before")
    @classmethod
    def _split_ips(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("allow_ips", "trusted_proxies")
    @classmethod
    def _valid_ips(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_networks(value)
        return value

    @field_validator("basic_auth")
    @classmethod
    def _valid_auth(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_credentials(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _tenants_name_keys(self) -> RoutingSettings:
        unknown = set(self.auth_tenants) - set(self.credentials())
        if unknown:
            raise ValueError(f"auth_tenants names keys with no credential: {sorted(unknown)}")
        return self

    def credentials(self) -> dict[str, str]:
        """The accepted key -> token pairs (empty when Basic auth is off)."""
        return parse_credentials(self.basic_auth.get_secret_value()) if self.basic_auth else {}

    def networks(self) -> tuple[IpNetwork, ...]:
        return parse_networks(self.allow_ips)

    def proxies(self) -> tuple[IpNetwork, ...]:
        return parse_networks(self.trusted_proxies)

    # --- delivery and restart (issue 18) ---------------------------------------------------------
    producer_idempotence: Literal["auto", "on", "off"] = Field(
        "auto",
        description="idempotent producer: auto = on unless the broker refuses it (embedded tansu)",
    )
    producer_delivery_timeout_ms: int = Field(
        40000, ge=100, description="a send not acknowledged in this time fails and is retried"
    )
    publish_retry_backoff_ms: int = Field(
        200, ge=1, description="first wait before a failed send is retried (doubles each time)"
    )
    publish_retry_backoff_max_ms: int = Field(
        5000, ge=1, description="longest wait between retries of a failed send"
    )
    publish_max_pending: int = Field(
        100_000,
        ge=1,
        description="callback records / dead letters waiting beyond this are dropped "
        "(counted); decisions never are",
    )
    rebuild_window_h: float = Field(
        6.0,
        gt=0,
        description="at start, rebuild from the decisions and call events of the last N hours",
    )
