"""Ingest's producer is idempotent where the broker allows it (`auto`), and falls back, once and
with a warning, where it does not (the embedded tansu broker refuses InitProducerId)."""

from __future__ import annotations

import logging

import pytest

from agentstream.stack.topics import create_topics
from ingest.metrics import IngestStats
from ingest.settings import IngestSettings
from ingest.sink import RecordSink, SinkError
from tests.integration.ingest.ingest_support import settings_for

pytestmark = pytest.mark.integration


def test_the_former_boolean_spellings_still_parse() -> None:
    assert IngestSettings(enable_idempotence="true").enable_idempotence == "on"
    assert IngestSettings(enable_idempotence=False).enable_idempotence == "off"
    assert IngestSettings().enable_idempotence == "auto"


async def test_auto_falls_back_on_a_broker_that_refuses_it(
    kafka_bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    sink = RecordSink(settings_for(kafka_bootstrap, topic_prefix), IngestStats())
    with caplog.at_level(logging.INFO):
        await sink.start()
    try:
        refusals = [r for r in caplog.records if "refuses idempotent" in r.getMessage()]
        assert len(refusals) == 1 and refusals[0].levelno == logging.WARNING
        # the sink's own errors (a record another test's leftovers log here is not the sink's)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not [r for r in errors if r.name.startswith(("ingest", "aiokafka"))], errors
        sink.send_record(sink.calls_topic, b"CA1", b"{}", read_at=0.0)
        assert await sink.flush(timeout_s=10)
    finally:
        await sink.stop()


async def test_on_insists(kafka_bootstrap: str, topic_prefix: str) -> None:
    create_topics(kafka_bootstrap, topic_prefix)
    settings = settings_for(
        kafka_bootstrap, topic_prefix, enable_idempotence="on", connect_timeout_s=1.0
    )
    with pytest.raises(SinkError):
        await RecordSink(settings, IngestStats()).start()
