"""Sending to Kafka through faust until the broker acknowledges: nothing is dropped.

faust's ``topic.send`` hands back a future that fails when the producer gives up (its request
timeout, a broker outage). The callers here hold their input unacknowledged until these
coroutines return, so an input offset is committed only after what it produced is durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError

logger = logging.getLogger(__name__)

BACKOFF_S = 0.2
BACKOFF_MAX_S = 5.0
_SEND_ERRORS = (KafkaError, ProducerSendError)
_last_log = [0.0]


def _log_retry(what: str, waiting: int, exc: BaseException) -> None:
    now = time.monotonic()
    if now - _last_log[0] >= 5.0:
        _last_log[0] = now
        logger.warning("send to %s failed, retrying until delivered (%d): %r", what, waiting, exc)


async def idempotence_allowed(
    bootstrap_servers: str, client_id: str, mode: str, wait_s: float = 30.0
) -> bool:
    """Whether the worker's producer may be idempotent: ``off`` never, ``on`` always (its start
    then fails where the broker refuses), ``auto`` when an idempotent producer starts here (the
    embedded tansu broker refuses InitProducerId: then plain ``acks=all``, with one warning).
    An unreachable broker is tried again for ``wait_s``, then ``auto`` goes on without."""
    if mode != "auto":
        return mode == "on"
    sender_log = logging.getLogger("aiokafka.producer.sender")
    deadline = time.monotonic() + wait_s
    while True:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            client_id=f"{client_id}-probe",
            acks="all",
            enable_idempotence=True,
        )
        level = sender_log.level
        sender_log.setLevel(logging.CRITICAL)  # the refusal is expected; logged below, once
        try:
            await producer.start()
            return True
        except KafkaError as exc:
            if not exc.retriable:
                logger.warning(
                    "the broker refuses idempotent producers (%r): transcripts and scores are "
                    "sent with acks=all only; a retried send may then be written twice "
                    "(readers dedupe by utterance id)",
                    exc,
                )
                return False
            if time.monotonic() >= deadline:
                logger.warning("no broker to ask about idempotence (%r): sending without", exc)
                return False
        finally:
            sender_log.setLevel(level)
            await producer.stop()
        await asyncio.sleep(1.0)


async def deliver_all(records: Sequence[tuple[Any, bytes | None, bytes]]) -> None:
    """Send every ``(topic, key, value)``, then wait for the acks; resend the failed ones (in
    their order, with a doubling backoff) until every one is acknowledged."""
    waiting = list(records)
    backoff = BACKOFF_S
    while waiting:
        futures: list[Any] = []
        failed: list[tuple[Any, bytes | None, bytes]] = []
        error: BaseException | None = None
        for index, (topic, key, value) in enumerate(waiting):
            try:
                futures.append(await topic.send(key=key, value=value))
            except _SEND_ERRORS as exc:
                failed = waiting[index:]
                error = exc
                break
        results = await asyncio.gather(*futures, return_exceptions=True)
        sent = waiting[: len(futures)]
        retry = [rec for rec, res in zip(sent, results, strict=True) if isinstance(res, Exception)]
        for res in results:
            if isinstance(res, Exception) and not isinstance(res, _SEND_ERRORS):
                raise res  # a bug (bad value), not an outage: do not spin on it
            if isinstance(res, Exception):
                error = res
        waiting = retry + failed
        if waiting:
            assert error is not None
            _log_retry(str(waiting[0][0].get_topic_name()), len(waiting), error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)


async def deliver(topic: Any, key: bytes | None, value: bytes) -> None:
    """One record, sent until acknowledged (see :func:`deliver_all`)."""
    await deliver_all([(topic, key, value)])
