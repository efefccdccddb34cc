"""The worker's producer (transcripts, scores) is idempotent where the broker allows it (`auto`),
and falls back, once and with a warning, where it does not (the embedded tansu broker refuses
InitProducerId); `on` and `off` never ask."""

from __future__ import annotations

import logging

import pytest

from analytics.app import make_app
from analytics.delivery import idempotence_allowed
from analytics.settings import WorkerSettings

pytestmark = pytest.mark.integration


async def test_on_and_off_do_not_ask_the_broker() -> None:
    assert await idempotence_allowed("127.0.0.1:1", "w", "on") is True
    assert await idempotence_allowed("127.0.0.1:1", "w", "off") is False


async def test_auto_without_a_broker_goes_on_without_it(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        assert await idempotence_allowed("127.0.0.1:1", "w", "auto", wait_s=0.0) is False
    assert any("no broker to ask" in r.getMessage() for r in caplog.records)


async def test_auto_asks_the_broker_and_warns_once_when_it_refuses(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        allowed = await idempotence_allowed(kafka_bootstrap, "w", "auto")
    refusals = [r for r in caplog.records if "refuses idempotent" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    if allowed:  # Apache Kafka (AGENTSTREAM_TEST_BOOTSTRAP)
        assert not refusals
    else:  # the embedded tansu broker
        assert len(refusals) == 1 and refusals[0].levelno == logging.WARNING


@pytest.mark.parametrize("idempotent", [True, False])
def test_the_faust_producer_is_built_as_decided(idempotent: bool) -> None:
    settings = WorkerSettings(bootstrap_servers="127.0.0.1:1", web_enabled=False)
    app = make_app(settings, idempotent)
    extra = dict(app.producer._settings_extra())
    assert extra.get("enable_idempotence", False) is idempotent
    if idempotent:
        assert extra["acks"] == "all"
