"""Topic administration with kafka-python: create the catalogue's topics before workers start."""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from schemas.topics import ALL_TOPICS, TopicSpec, prefixed

logger = logging.getLogger(__name__)


def admin_client(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="agentstream-admin")


def create_topics(
    bootstrap: str,
    prefix: str = "",
    specs: tuple[TopicSpec, ...] = ALL_TOPICS,
    partitions: int | None = None,
    replication_factor: int = 1,
) -> list[str]:
    """Create every topic that does not exist yet; returns the names created."""
    admin = admin_client(bootstrap)
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                name=prefixed(spec, prefix),
                num_partitions=partitions or spec.partitions,
                replication_factor=replication_factor,
                topic_configs={
                    "cleanup.policy": spec.cleanup_policy,
                    "retention.ms": str(spec.retention_ms),
                },
            )
            for spec in specs
            if prefixed(spec, prefix) not in existing
        ]
        created: list[str] = []
        for topic in wanted:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                logger.info("topic %s already exists", topic.name)
        return created
    finally:
        admin.close()


def list_topics(bootstrap: str) -> list[str]:
    admin = admin_client(bootstrap)
    try:
        return sorted(admin.list_topics())
    finally:
        admin.close()


def describe_topics(bootstrap: str, names: list[str]) -> list[dict[str, Any]]:
    admin = admin_client(bootstrap)
    try:
        described = admin.describe_topics(names or None)
        return [dict(item) for item in described]
    finally:
        admin.close()
