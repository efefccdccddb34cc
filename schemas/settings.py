"""Settings shared by every service's settings class (no environment is read here).

Each service defines its own frozen ``BaseSettings`` subclass with its own env prefix and
mixes in :class:`KafkaFields`; ``main()`` builds it once and passes it down.
``KAFKA_BOOTSTRAP_SERVERS`` (or ``<PREFIX>BOOTSTRAP_SERVERS``) points everything at a real
Apache Kafka instead of the embedded broker.
"""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, Field

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


class KafkaFields(BaseModel):
    bootstrap_servers: str = Field(
        DEFAULT_BOOTSTRAP,
        validation_alias=AliasChoices("bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS"),
        description="host:port[,host:port]; KAFKA_BOOTSTRAP_SERVERS is honoured too",
    )
    topic_prefix: str = Field("", description="namespace prefix for every topic name")
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 2000
    fetch_max_wait_ms: int = Field(30, ge=0, description="broker fetch wait while records flow")
    idle_fetch_max_wait_ms: int = Field(
        1000, ge=0, description="fetch wait once idle (schemas.fetchwait); <= the above: no pacing"
    )
    fetch_idle_after_s: float = Field(30.0, gt=0, description="idle after this long with no record")
    client_id: str = "agentstream"
