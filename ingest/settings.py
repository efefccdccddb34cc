"""Settings of the ingest WebSocket server (env prefix ``AGENTSTREAM_INGEST_``).

Built once by ``agentstream ingest`` and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from schemas.settings import KafkaFields

logger = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# `processes=auto` starts one process per core, but no more than this: each process has its own
# Kafka producer, decisions consumer and buffer, and past this many the broker connections cost
# more than the frames do.
MAX_AUTO_PROCESSES = 16


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class IngestSettings(KafkaFields, BaseSettings):
    """Everything the ingest server needs; each field is env ``AGENTSTREAM_INGEST_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTSTREAM_INGEST_", frozen=True, populate_by_name=True
    )

    host: str = "0.0.0.0"  # noqa: S104 - Exotel connects from outside
    port: int = Field(8080, ge=0, le=65535)

    # --- processes (docs/ingest.md "Several processes") -----------------------------------
    processes: PositiveInt | Literal["auto"] = Field(
        1,
        description="processes sharing the port (SO_REUSEPORT) under one supervisor; auto: one "
        f"per core, at most {MAX_AUTO_PROCESSES}; 1: one process, no supervisor",
    )
    process_index: int | None = Field(
        None, ge=0, description="which of those processes this is (set by the supervisor)"
    )
    reuse_port: bool = Field(
        False, description="bind with SO_REUSEPORT (always on in the processes of processes > 1)"
    )
    child_metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="process i of processes > 1 also answers GET /health and /metrics on this "
        "port + i (and nothing else); 0 = off",
    )

    # --- auth -----------------------------------------------------------------------------
    basic_auth: SecretStr | None = Field(
        None,
        description="'KEY:TOKEN[,KEY2:TOKEN2]' accepted as HTTP Basic auth; unset = auth off",
    )
    allow_ips: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated IPs/CIDRs allowed to connect; empty = any"
    )
    public_url: str | None = Field(
        None, description="base URL Exotel reaches us at, e.g. wss://ingest.example.com"
    )
    stream_url_scheme: Literal["wss", "ws"] = Field(
        "wss",
        description="scheme of /exotel/stream-url answers built from the Host header; Exotel "
        "refuses ws:// in production, so ws must be asked for",
    )
    stream_url_params: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="comma-separated query parameters /exotel/stream-url forwards besides "
        "tenant and campaign; every other parameter (Exotel's own) is dropped",
    )

    # --- limits ---------------------------------------------------------------------------
    max_message_bytes: int = Field(512 * 1024, ge=1024)
    max_bad_frames: int = Field(
        50, ge=1, description="undecodable frames in a row that end a call (1007)"
    )
    max_record_bytes: int = Field(
        1_000_000,
        ge=16 * 1024,
        description="largest Kafka record written (Kafka's default limit is 1 MiB); a bigger "
        "one is dead-lettered without its bytes instead of being retried forever",
    )
    max_calls: int = Field(2000, ge=1, description="concurrent calls; more are refused (503)")
    first_message_timeout_s: float = Field(10.0, gt=0)
    idle_timeout_s: float = Field(30.0, gt=0, description="started call with no media")
    session_cap_s: float = Field(3600.0, gt=0)
    sweep_interval_s: float = Field(0.5, gt=0)
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0

    # --- producer -------------------------------------------------------------------------
    buffer_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1, description="audio kept while Kafka is slow/down"
    )
    linger_ms: float = Field(
        20.0,
        ge=0,
        description=(
            "how long a partition's sender waits for more frames before a produce request: "
            "20 ms cut the embedded broker's CPU by 40 % at 1,000 calls (README, Capacity)"
        ),
    )
    batch_max_bytes: int = Field(256 * 1024, ge=1024)
    acks: str = "all"
    enable_idempotence: Literal["auto", "on", "off"] = Field(
        "auto",
        description="idempotent producer: auto = on unless the broker refuses it (embedded tansu)",
    )
    request_timeout_ms: int = Field(30_000, ge=500)
    retry_backoff_ms: int = Field(200, ge=10)
    connect_timeout_s: float = Field(30.0, gt=0, description="wait for Kafka at start")
    shutdown_timeout_s: float = Field(10.0, gt=0)

    # --- voicebot -------------------------------------------------------------------------
    voicebot_upstream_url: str | None = Field(
        None, description="upstream bot ws(s):// URL for every tenant without its own"
    )
    voicebot_upstreams: dict[str, str] = Field(
        default_factory=dict, description='per tenant, JSON: {"acme": "wss://bot.acme/ws"}'
    )
    handoff_enabled: bool = True
    upstream_open_timeout_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _index_in_range(self) -> IngestSettings:
        if self.process_index is not None and self.process_index >= self.process_count():
            raise ValueError(
                f"process_index {self.process_index} is not below processes {self.processes}"
            )
        return self

    @field_validator("enable_idempotence", mode="before")
    @classmethod
    def _idempotence(cls, value: Any) -> Any:
        """The former boolean spellings still work: true -> on, false -> off."""
        flags = {"true": "on", "1": "on", "yes": "on", "false": "off", "0": "off", "no": "off"}
        if isinstance(value, bool):
            return "on" if value else "off"
        return flags.get(str(value).strip().lower(), value)

    @field_validator("allow_ips", "stream_url_params", mode="before")
    @classmethod
    def _split_ips(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("allow_ips")
    @classmethod
    def _valid_ips(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("basic_auth")
    @classmethod
    def _valid_auth(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for pair in value.get_secret_value().split(","):
                if ":" not in pair.strip():
                    raise ValueError("basic_auth must be 'KEY:TOKEN[,KEY2:TOKEN2]'")
        return value

    def credentials(self) -> dict[str, str]:
        """The accepted key -> token pairs (empty when auth is off)."""
        if self.basic_auth is None:
            return {}
        pairs: dict[str, str] = {}
        for pair in self.basic_auth.get_secret_value().split(","):
            key, _, token = pair.strip().partition(":")
            pairs[key] = token
        return pairs

    def networks(self) -> tuple[IpNetwork, ...]:
        return tuple(ipaddress.ip_network(item, strict=False) for item in self.allow_ips)

    def upstream_for(self, tenant: str) -> str | None:
        """The upstream bot URL for ``tenant`` (None: /voicebot behaves like /stream)."""
        return self.voicebot_upstreams.get(tenant, self.voicebot_upstream_url)

    # --- processes ----------------------------------------------------------------------------

    def process_count(self, available: int | None = None) -> int:
        """``processes`` as a number: ``auto`` is one per core we may run on (``available``, else
        this process's affinity mask), at least 1 and at most :data:`MAX_AUTO_PROCESSES`."""
        if self.processes != "auto":
            return self.processes
        if available is None:
            try:
                available = len(os.sched_getaffinity(0))
            except (AttributeError, OSError):
                available = os.cpu_count() or 1
        return max(1, min(available, MAX_AUTO_PROCESSES))

    @property
    def calls_per_process(self) -> int:
        """This process's share of ``max_calls`` (which bounds the whole ingest): all of it in a
        single process, ceil(max_calls / processes) in each process of several."""
        if self.process_index is None:
            return self.max_calls
        return self.calls_each(self.process_count())

    def calls_each(self, processes: int) -> int:
        """ceil(max_calls / processes): no process refuses a call while the whole has room
        spread evenly (the kernel spreads connections, not perfectly evenly)."""
        return -(-self.max_calls // processes)

    @property
    def binds_reuse_port(self) -> bool:
        """SO_REUSEPORT: asked for, or one of several processes sharing the port."""
        return self.reuse_port or self.process_index is not None

    @property
    def stats_port(self) -> int | None:
        """This process's own /health + /metrics port (processes > 1 only), else None."""
        if self.process_index is None or not self.child_metrics_port:
            return None
        return self.child_metrics_port + self.process_index
