"""The routing service: the parts of one routing instance, wired, started and stopped.

Per instance (each part in its own module):
- the HTTP app (:mod:`routing.http`): Exotel's callbacks, answered from the router's memory;
- the :class:`~routing.reader.DecisionReader`: every decision, call event and transcript;
- the :class:`~routing.evaluator_loop.EvaluatorLoop`: owned scores -> router -> decisions;
- the :class:`~routing.publisher.DecisionPublisher`: what the router publishes;
- the supervisor dashboard (:mod:`routing.dashboard`): its own reader of every call, the board
  and the broadcaster behind ``/dashboard``;
- the :class:`~routing.summaries.SummaryBook` of the calls this instance owns (fed by the
  evaluator loop, the reader and the router's own decisions and answers);
- here: a tick for silence / max-duration rules and due call summaries, eviction of idle
  calls, and rules reload on file change or :meth:`RoutingService.request_reload` (SIGHUP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from routing.auth import RoutingAuth, warn_if_open
from routing.dashboard.board import Board
from routing.dashboard.feed import BoardFeed
from routing.dashboard.http import Broadcaster
from routing.evaluator_loop import EvaluatorLoop
from routing.http import start_http_app
from routing.metrics import RoutingMetrics
from routing.parse import RecordParser
from routing.publisher import DecisionPublisher, start_producer
from routing.reader import DecisionReader
from routing.readiness import WorkerBoard
from routing.router import Router
from routing.settings import RoutingSettings
from routing.summaries import SummaryBook, SummaryTap
from routing.watermark import Watermarks
from schemas.fetchwait import FetchPacer
from schemas.rules import RulesError, RulesFile, decode_rules, default_rules, parse_rules
from schemas.topics import CALLS, DECISIONS, SCORES, TRANSCRIPTS, WORKERS, prefixed

logger = logging.getLogger(__name__)

_TICK_BATCH = 200
_STOP_CLIENT_S = 10.0


class RulesSource:
    """Where the rules come from, and whether they changed since the last load."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None

    def _current_stamp(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def load(self) -> RulesFile:
        """Read and validate; raises :class:`RulesError` naming the line."""
        if self.path is None:
            return default_rules()
        stamp = self._current_stamp()
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise RulesError(f"{self.path}: cannot read: {exc}") from exc
        rules = parse_rules(decode_rules(data, str(self.path)), str(self.path))
        self._stamp = stamp
        return rules

    def changed(self) -> bool:
        return self.path is not None and self._current_stamp() != self._stamp


class RoutingService:
    """One routing instance: build with settings, ``await start()``, ``await stop()``."""

    def __init__(
        self,
        settings: RoutingSettings,
        rules: RulesFile | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.rules_source = RulesSource(settings.rules_path)
        self.metrics = RoutingMetrics()
        # publishing reaches Kafka once started; before that nothing is published
        self.publisher = DecisionPublisher(settings, self.metrics)
        self.summaries = SummaryBook(
            settle_ms=settings.summary_settle_ms,
            idle_ms=int(settings.summary_idle_s * 1000),
            clock=clock,
        )
        rules = rules if rules is not None else self.rules_source.load()
        self.router = Router(
            rules,
            SummaryTap(self.publisher, self.summaries),
            clock=clock,
            grace_ms=settings.passthru_grace_ms,
            publish_continue=settings.publish_continue,
            max_score_age_s=settings.max_score_age_s,
            metrics=self.metrics,
            record_callbacks=settings.record_callbacks,
        )
        prefix = settings.topic_prefix
        self.topics = {
            "decisions": prefixed(DECISIONS, prefix),
            "calls": prefixed(CALLS, prefix),
            "transcripts": prefixed(TRANSCRIPTS, prefix),
            "scores": prefixed(SCORES, prefix),
            "workers": prefixed(WORKERS, prefix),
        }
        self.watermarks = Watermarks(
            bound_s=settings.passthru_complete_wait_ms / 1000,
            clock=clock,
            registry=self.metrics.registry,
        )
        self.board = WorkerBoard()
        kafka: dict[str, Any] = {
            "bootstrap_servers": settings.bootstrap_servers,
            "client_id": f"{settings.client_id}-routing",
        }
        self._kafka = kafka
        parser = RecordParser(self.metrics, self.publisher)
        self.evaluator_loop = EvaluatorLoop(
            settings,
            kafka,
            self.topics["scores"],
            self.router,
            parser,
            self.publisher,
            self.summaries,
            self.watermarks,
        )
        self.reader = DecisionReader(
            settings,
            kafka,
            self.topics,
            self.router,
            parser,
            self.publisher,
            self.metrics,
            self.evaluator_loop.owns,
            self.summaries,
            self.watermarks,
            self.board,
            pacer=self.evaluator_loop.pacer,
        )
        self.rebuilt = self.reader.rebuilt
        self.dashboard = Board(rules, clock=clock)
        self.broadcaster = Broadcaster(self.dashboard, settings.dashboard_interval_ms / 1000)
        self.board_feed = BoardFeed(
            self.dashboard,
            bootstrap_servers=settings.bootstrap_servers,
            topic_prefix=prefix,
            client_id=f"{settings.client_id}-dashboard",
            lookback_s=settings.dashboard_lookback_s,
            fetch_max_wait_ms=max(settings.fetch_max_wait_ms, 100),
            pacer=FetchPacer(
                max(settings.fetch_max_wait_ms, 100),
                settings.idle_fetch_max_wait_ms,
                settings.fetch_idle_after_s,
            ),
        )
        self._producer: AIOKafkaProducer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.auth = RoutingAuth.from_settings(settings)
        self.http_port: int | None = None
        self.failed = asyncio.Event()

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, serve_http: bool = True) -> None:
        s = self.settings
        if serve_http:
            warn_if_open(self.auth)
            self._runner, self.http_port = await start_http_app(
                self.router,
                s.host,
                s.port,
                auth=self.auth,
                dead_letters=self.publisher.publish_dead_letter,
                dashboard=self.broadcaster if s.dashboard else None,
                watermarks=self.watermarks,
                board=self.board if s.ready_requires_workers else None,
            )
        self._producer = await start_producer(s, self._kafka)
        self.publisher.start(self._producer)
        loops = [
            (self.reader.run(), "routing-reader"),
            (self._housekeeping(), "routing-housekeeping"),
            (self.evaluator_loop.run(self.rebuilt), "routing-evaluator"),
        ]
        if serve_http and s.dashboard:
            loops.append((self.board_feed.run_forever(), "routing-dashboard-feed"))
        for coro, name in loops:
            task = asyncio.create_task(coro, name=name)
            task.add_done_callback(self._task_done)
            self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error("%s failed: %r", task.get_name(), exc, exc_info=exc)
            self.failed.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._publish_summaries()  # what is due now; the rest is the next owner's
        await self.publisher.stop()
        for client in (self.reader.consumer, self.evaluator_loop.consumer, self._producer):
            if client is not None:
                # bounded: leaving a group of a broker that is gone must not hang the stop
                with contextlib.suppress(KafkaError, OSError, TimeoutError):
                    await asyncio.wait_for(client.stop(), _STOP_CLIENT_S)
        if self._runner is not None:
            await self._runner.cleanup()

    # --- time-driven work -----------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        s = self.settings
        last_evict = last_poll = time.monotonic()
        while True:
            await asyncio.sleep(s.tick_interval_ms / 1000)
            # Timers run only for owned calls, and not while a rebalance is in progress.
            if self.router.ready:
                self._publish_summaries()
            if self.router.ready and self.evaluator_loop.owned:
                self.router.tick(_TICK_BATCH)
                while self.router.evaluator.due_now():
                    await asyncio.sleep(0)  # let callbacks in between bursts of deadlines
                    self.router.tick(_TICK_BATCH)
            now = time.monotonic()
            if now - last_evict >= 60:
                last_evict = now
                evicted = self.router.evict(s.state_idle_s)
                self.watermarks.evict(s.state_idle_s)
                if evicted:
                    logger.info("forgot %d idle calls", evicted)
            if s.rules_poll_s > 0 and now - last_poll >= s.rules_poll_s:
                last_poll = now
                if self.rules_source.changed():
                    self.reload_rules()

    def _publish_summaries(self) -> None:
        """Publish the call summaries that are due, for the calls this instance still owns."""
        for summary in self.summaries.due():
            if self.evaluator_loop.owns(summary.call_sid.encode(), -1):
                self.publisher.publish_summary(summary)

    def reload_rules(self) -> bool:
        """Load the rules file again; on error keep the current rules. State is kept."""
        try:
            rules = self.rules_source.load()
        except RulesError as exc:
            logger.error("rules reload failed, keeping the current rules:\n%s", exc)
            self.metrics.rules_reloads.labels("error").inc()
            return False
        self.router.set_rules(rules)
        self.dashboard.set_rules(rules)
        self.metrics.rules_reloads.labels("ok").inc()
        logger.info("rules reloaded from %s", self.rules_source.path or "the shipped file")
        return True

    def request_reload(self) -> None:
        """SIGHUP handler: reload at once (cheap, in the loop thread)."""
        self.reload_rules()
