"""Settings of the routing service (``agentstream routing``), env prefix ``AGENTSTREAM_ROUTING_``.

Built once in ``main()`` and passed down; nothing else reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.settings import KafkaFields


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
