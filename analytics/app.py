"""The faust app factory of the analytics worker, tuned for Apache Kafka and embedded tansu.

``make_app(settings)`` configures everything that differs from faust's defaults:

* records are plain JSON / raw bytes of :mod:`schemas.records` models (no faust class path in
  payloads: ``value_serializer='raw'`` and we encode with ``Record.to_bytes()``);
* consumer session 6 s / heartbeat 2 s (the group join takes session/2 on tansu);
* the consumer fetch wait, hard-coded to 1,500 ms in faust's aiokafka driver, is paced instead
  (:class:`schemas.fetchwait.FetchPacer`): ``settings.fetch_max_wait_ms`` while records flow,
  ``idle_fetch_max_wait_ms`` when idle, by a subclassed transport
  (:class:`_FastFetchConsumerThread`);
* ``take_events`` micro-batches wait for a first event instead of waking every ``within``
  (:class:`QuietStream`), so an idle worker does not spin;
* our catalogue topics are never declared by faust (they are created beforehand with
  ``agentstream.stack.topics.create_topics``; :func:`catalogue_topic` marks them non-internal),
  and the leader-election topic is disabled;
* no record is skipped around a rebalance (:class:`analytics.gapless.GaplessMixin` on the
  consumer), and a rebalance does not wait for held events (``stream_wait_empty=False``);
* the web server is off by default (or on a configurable port) and each process gets its own
  temporary datadir, so several workers run side by side on one machine.

Other stages add their agents (and any adjustment, e.g. Table recovery on tansu) to the returned
app (:func:`analytics.scoring.agent.attach_scoring`).
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.utils.times import Seconds, want_seconds

from analytics.gapless import GaplessMixin
from analytics.settings import WorkerSettings
from schemas.fetchwait import FetchPacer
from schemas.topics import TopicSpec, prefixed


class _FastFetchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    """faust's consumer thread with a paced fetch wait instead of its fixed 1,500 ms.

    faust builds the AIOKafkaConsumer with ``fetch_max_wait_ms=1500`` inline; aiokafka keeps the
    value on the consumer and hands it to its Fetcher only in ``start()``, so setting it on the
    freshly built (not yet started) consumer is the smallest override that keeps faust's code.
    After each poll (faust polls at least every second), in this thread, the pacer picks the
    wait of the next fetch: short while records flow, long after a quiet spell.
    """

    fetch_max_wait_ms: int = 30
    idle_fetch_max_wait_ms: int = 30
    fetch_idle_after_s: float = 30.0

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        self.pacer = FetchPacer(
            self.fetch_max_wait_ms, self.idle_fetch_max_wait_ms, self.fetch_idle_after_s
        )
        return consumer

    async def _fetch_records(self, consumer: Any, *args: Any, **kwargs: Any) -> Any:
        records = await super()._fetch_records(consumer, *args, **kwargs)
        if records:
            self.pacer.saw_records()
        self.pacer.apply(consumer)
        return records


class QuietStream(faust.Stream):  # type: ignore[misc]
    """A faust Stream whose ``take_events`` sleeps until an event comes.

    faust's own loop wakes every ``within`` seconds, events or not (100 times a second for the
    scoring agent's 10 ms batches: most of an idle worker's CPU). Here an empty buffer waits
    for its first event; from then on the batch is cut as in faust: when ``max_`` events are
    buffered or ``within`` seconds have passed, whichever comes first. Events are acked only
    after the batch was handled, as in faust.
    """

    async def take_events(self, max_: int, within: Seconds) -> AsyncIterator[list[Any]]:
        events: list[Any] = []
        arrived, full, consumed = asyncio.Event(), asyncio.Event(), asyncio.Event()
        timeout = want_seconds(within) if within else None
        consuming: asyncio.Future[None] | None = None
        enable_acks: bool = getattr(self, "enable_acks", True)

        async def add_to_buffer(value: Any) -> Any:
            nonlocal consuming
            if consuming is not None:  # a batch is being handled: wait for it to finish
                try:
                    await consuming
                finally:
                    consuming = None
            event = self.current_event
            if event is None:
                raise RuntimeError("take_events found no current event")
            events.append(event)
            arrived.set()
            if len(events) >= max_:
                full.set()
                consumed.clear()
                await self.wait(consumed)
            return value

        self.enable_acks = False  # acked below, after the batch was handled
        self.add_processor(add_to_buffer)
        self._enable_passive(aiter(self.channel))
        try:
            while not self.should_stop:
                if not events and await self.wait_for_stopped(arrived):
                    break
                await self.wait_for_stopped(full, timeout=timeout)
                if not events:
                    continue
                gate: asyncio.Future[None] = self.loop.create_future()
                consuming = gate  # events arriving while the batch is handled wait for it
                batch = list(events)
                events.clear()
                try:
                    yield batch
                finally:
                    for event in batch:
                        await self.ack(event)
                    arrived.clear()
                    full.clear()
                    consumed.set()
                    gate.set_result(None)
        finally:
            self.enable_acks = enable_acks
            self._processors.remove(add_to_buffer)


def _transport_class(
    fetch_max_wait_ms: int,
    idle_fetch_max_wait_ms: int,
    fetch_idle_after_s: float,
    idempotent: bool = False,
) -> type[Any]:
    thread_cls = type(
        "AgentstreamConsumerThread",
        (_FastFetchConsumerThread,),
        {
            "fetch_max_wait_ms": fetch_max_wait_ms,
            "idle_fetch_max_wait_ms": idle_fetch_max_wait_ms,
            "fetch_idle_after_s": fetch_idle_after_s,
        },
    )

    class AgentstreamConsumer(GaplessMixin, faust_aiokafka.Consumer):  # type: ignore[misc]
        thread_class = thread_cls

        def _new_consumer_thread(self) -> Any:
            return thread_cls(self, loop=self.loop, beacon=self.beacon)

    class AgentstreamProducer(faust_aiokafka.Producer):  # type: ignore[misc]
        def _settings_extra(self) -> Any:
            extra = dict(super()._settings_extra())
            if idempotent:
                extra.update(acks="all", enable_idempotence=True)
            return extra

    class AgentstreamTransport(faust_aiokafka.Transport):  # type: ignore[misc]
        Consumer = AgentstreamConsumer
        Producer = AgentstreamProducer

    return AgentstreamTransport


class AgentstreamApp(faust.App):  # type: ignore[misc]
    """faust.App whose consumer transport uses the configured (paced) fetch wait."""

    fetch_max_wait_ms: int = 30
    idle_fetch_max_wait_ms: int = 30
    fetch_idle_after_s: float = 30.0
    #: the producer of transcripts and scores is idempotent (see make_app)
    idempotent: bool = False

    def _new_transport(self) -> Any:
        transport_cls = _transport_class(
            self.fetch_max_wait_ms,
            self.idle_fetch_max_wait_ms,
            self.fetch_idle_after_s,
            self.idempotent,
        )
        return transport_cls(self.conf.broker_consumer, self, loop=self.loop)


def _broker_urls(bootstrap_servers: str) -> list[str]:
    return [f"kafka://{hp.strip()}" for hp in bootstrap_servers.split(",") if hp.strip()]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def make_app(settings: WorkerSettings, idempotent: bool = False) -> faust.App:
    """Build the (not yet started) faust app of one worker process; ``idempotent``: what
    :func:`analytics.delivery.idempotence_allowed` said for ``settings.producer_idempotence``."""
    datadir = settings.datadir or Path(tempfile.mkdtemp(prefix="agentstream-worker-"))
    app = AgentstreamApp(
        settings.app_id,
        broker=_broker_urls(settings.bootstrap_servers),
        broker_client_id=settings.client_id,
        broker_session_timeout=settings.session_timeout_ms / 1000.0,
        broker_heartbeat_interval=settings.heartbeat_interval_ms / 1000.0,
        broker_commit_interval=settings.commit_interval_s,
        # The audio agent holds a frame unacknowledged while its utterance is open, and an open
        # utterance only closes on more audio: waiting for every event to be acked before a
        # rebalance would stall it until each live call's idle timeout. Revoked partitions'
        # calls are dropped instead, and their unfinished frames (never committed) replayed by
        # the next owner, which skips what was published (analytics.asr.progress).
        stream_wait_empty=False,
        consumer_auto_offset_reset=settings.auto_offset_reset,
        producer_linger_ms=settings.producer_linger_ms,
        key_serializer="raw",
        value_serializer="raw",
        topic_disable_leader=True,
        topic_partitions=8,
        datadir=str(datadir),
        store=settings.store,
        web_enabled=settings.web_enabled,
        web_host=settings.web_host,
        web_port=settings.web_port
        or (_free_port(settings.web_host) if settings.web_enabled else 6066),
        web_bind=settings.web_host,
        autodiscover=False,
        Stream=QuietStream,
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    app.idle_fetch_max_wait_ms = settings.idle_fetch_max_wait_ms
    app.fetch_idle_after_s = settings.fetch_idle_after_s
    app.idempotent = idempotent
    return app


def catalogue_topic(app: faust.App, spec: TopicSpec, prefix: str) -> Any:
    """A faust topic for one catalogue entry: raw bytes, never declared (created beforehand)."""
    return app.topic(
        prefixed(spec, prefix),
        key_serializer="raw",
        value_serializer="raw",
        partitions=spec.partitions,
        internal=False,
    )
