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
