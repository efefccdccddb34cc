"""How far behind real time the worker takes each call's audio: the ASR backlog, as a gauge.

The transcription agent takes frames only as fast as the recogniser keeps up (it waits for
capacity after each frame), so the age of a frame when it is taken, now minus the time ingest
read it (``AudioFrameMeta.received_at_ms``), is how far behind this worker is. A call's lag is
that of its latest frame; the gauge reports the largest over the calls heard from in the last
``forget_after_s`` (a call that ended is forgotten on ``stop`` or after that time), plus how
many calls are more than ``behind_s`` behind. Plain integers on the hot path; metric families
are built only when Prometheus scrapes (:class:`BacklogCollector`).

Falling behind is also said in the log, once per episode: a WARNING when a call's audio is
taken more than ``warn_s`` after ingest read it (its transcripts, scores and decisions are that
late, and a Passthru answer for it may say ``complete: false``), and an INFO line once every
live call is back under ``behind_s``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)


class AudioBacklog:
    """Per-call lag of the latest frame taken (ms); see the module docstring."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        forget_after_s: float = 30.0,
        behind_s: float = 2.0,
        warn_s: float = 10.0,
    ) -> None:
        self._clock = clock
        self.forget_after_ms = int(forget_after_s * 1000)
        self.behind_ms = int(behind_s * 1000)
        self.warn_ms = int(warn_s * 1000)
        self._calls: dict[str, tuple[int, int]] = {}  # call SID -> (lag ms, taken at ms)
        self._warned = False  # an episode of falling behind was logged and has not ended
        self._check_at_ms = 0

    def observe(self, call_sid: str, received_at_ms: int) -> int:
        """A frame of ``call_sid`` read by ingest at ``received_at_ms`` is taken now; its lag."""
        now = int(self._clock() * 1000)
        lag = max(0, now - received_at_ms)
        self._calls[call_sid] = (lag, now)
        if lag > self.warn_ms and not self._warned:
            self._warned = True
            logger.warning(
                "ASR backlog: call %s's audio is taken %.1f s after ingest read it (%d live "
                "calls over %g s behind): its transcripts and decisions are that late",
                call_sid,
                lag / 1000,
                self.calls_behind(),
                self.behind_ms / 1000,
            )
        elif self._warned and lag < self.behind_ms and now >= self._check_at_ms:
            self._check_at_ms = now + 1000  # the check walks every live call: once a second
            if self.max_lag_ms() < self.behind_ms:
                self._warned = False
                logger.info(
                    "ASR backlog cleared: every live call under %g s", self.behind_ms / 1000
                )
        return lag

    def forget(self, call_sid: str) -> None:
        self._calls.pop(call_sid, None)

    def _live(self) -> list[int]:
        cutoff = int(self._clock() * 1000) - self.forget_after_ms
        stale = [sid for sid, (_, at) in self._calls.items() if at < cutoff]
        for sid in stale:
            del self._calls[sid]
        return [lag for lag, _ in self._calls.values()]

    def max_lag_ms(self) -> int:
        return max(self._live(), default=0)

    def calls_behind(self) -> int:
        return sum(1 for lag in self._live() if lag > self.behind_ms)


class BacklogCollector(Collector):
    """Prometheus view of an :class:`AudioBacklog` (register it on a CollectorRegistry)."""

    def __init__(self, backlog: AudioBacklog) -> None:
        self.backlog = backlog

    def collect(self) -> Iterator[Metric]:
        lags = self.backlog._live()
        yield GaugeMetricFamily(
            "agentstream_worker_audio_lag_seconds",
            "How far behind real time the worker takes audio: the largest lag of a live call's "
            "latest frame (now minus ingest's receive time)",
            value=max(lags, default=0) / 1000,
        )
        yield GaugeMetricFamily(
            "agentstream_worker_calls_behind",
            f"Live calls whose audio is more than {self.backlog.behind_ms / 1000:g} s behind",
            value=sum(1 for lag in lags if lag > self.backlog.behind_ms),
        )
        yield GaugeMetricFamily(
            "agentstream_worker_live_calls",
            f"Calls whose audio was taken in the last {self.backlog.forget_after_ms / 1000:g} s",
            value=len(lags),
        )
