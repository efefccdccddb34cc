"""Settings of the embedded broker and the supervisor (``agentstream broker`` / ``up``)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class BrokerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTSTREAM_BROKER_", frozen=True)

    host: str = "127.0.0.1"
    port: int = 9092
    startup_timeout_s: float = 20.0


class UpSettings(BaseSettings):
    """``agentstream up``: which services to start and where they listen."""

    model_config = SettingsConfigDict(env_prefix="AGENTSTREAM_UP_", frozen=True)

    embedded_broker: bool = True
    workers: int = 1
    stop_timeout_s: float = 10.0
    restart_backoff_s: float = 1.0  # first wait before a crashed service is restarted (doubles)
    restart_backoff_max_s: float = 30.0
    crash_loop_limit: int = 5  # this many crashes of one service ...
    crash_loop_window_s: float = 60.0  # ... within this many seconds: give up, exit non-zero
