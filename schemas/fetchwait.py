"""How long a consumer's fetch may wait at the broker: short while records flow, long when idle.

A fetch that finds no record waits up to ``fetch_max_wait_ms`` at the broker and then returns
empty, so an idle consumer sends one fetch per wait. Apache Kafka answers a waiting fetch as soon
as a record arrives, but the embedded broker (tansu) looks for records only every half of the
remaining wait, so there a long wait is also a delay. :class:`FetchPacer` gives both: the short
``fetch_max_wait_ms`` while records flow (or while its owner says it is busy, e.g. ingest with
live voicebot calls), the long ``idle_fetch_max_wait_ms`` once nothing was read for
``fetch_idle_after_s``. The first record after a quiet spell waits at most about half the idle
wait on tansu (nothing on Kafka); the records after it are fast again.

The pacer is pure (injected clock); :meth:`FetchPacer.apply` sets the wait on a running aiokafka
consumer, where it takes effect from the next fetch request.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from schemas.settings import KafkaFields


class FetchPacer:
    """Chooses the fetch wait of one or more consumers of one process (see module docstring)."""

    def __init__(
        self,
        active_ms: int,
        idle_ms: int,
        idle_after_s: float,
        busy: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.active_ms = active_ms
        self.idle_ms = max(idle_ms, active_ms)
        self.idle_after_s = idle_after_s
        self._busy = busy
        self._clock = clock
        self._last_records = -math.inf  # start idle: a fetch with records waiting returns at once

    @classmethod
    def from_settings(
        cls,
        settings: KafkaFields,
        busy: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> FetchPacer:
        return cls(
            settings.fetch_max_wait_ms,
            settings.idle_fetch_max_wait_ms,
            settings.fetch_idle_after_s,
            busy,
            clock,
        )

    def saw_records(self) -> None:
        """Records were read: stay on the short wait for ``idle_after_s``."""
        self._last_records = self._clock()

    @property
    def idle(self) -> bool:
        if self._busy is not None and self._busy():
            return False
        return self._clock() - self._last_records >= self.idle_after_s

    def wait_ms(self) -> int:
        return self.idle_ms if self.idle else self.active_ms

    def apply(self, consumer: Any) -> int:
        """Set the current wait on an aiokafka consumer (next fetch on); returns it.

        aiokafka reads ``fetch_max_wait_ms`` once, into its fetcher, which puts it into every
        fetch request it builds; the fetcher exists once the consumer is started.
        """
        wait = self.wait_ms()
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is not None:
            fetcher._fetch_max_wait_ms = wait
        return wait
