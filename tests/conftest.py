"""Shared fixtures: one real embedded broker per test session, unique names per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from agentstream.stack.broker import EmbeddedBroker

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real broker: KAFKA_BOOTSTRAP_SERVERS if set, else embedded tansu."""
    external = os.environ.get("AGENTSTREAM_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture
def unique() -> str:
    """A short unique token for topic names, consumer groups and call SIDs."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def topic_prefix(unique: str) -> str:
    """A unique topic namespace: every catalogue topic is created under it."""
    return f"t{unique}."
