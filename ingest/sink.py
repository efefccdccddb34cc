"""The ingest side of Kafka: a bounded, ordered, batching buffer in front of aiokafka.

Sessions hand it :class:`~ingest.outgoing.Outgoing` records (:meth:`RecordSink.write`); the
sink alone picks their partition, encodes their headers and owns the per-partition queues.

Why not ``producer.send()`` per frame: aiokafka keeps one pending batch per partition and
handlers stall whenever it fills (see shared performance notes). Instead every partition has
its own queue and one sender task that builds a batch with ``create_batch()``, hands it over
with ``send_batch()`` and waits for the ack before taking the next one, so

* records of one call (one key -> one partition) are written in order, one batch in flight;
* a failed batch is put back at the head of its queue and retried with backoff, so nothing
  is lost or reordered while Kafka is down (at-least-once: an ambiguous ack can duplicate);
* the handlers only append to a deque: the event loop never blocks on Kafka;
* the buffer is bounded in bytes: past the bound the oldest queued *audio* frame (across all
  partitions) is dropped and counted, and one ``gap`` record per affected call is written
  once the buffer has room (or when the call ends). Lifecycle records are never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from ingest.metrics import IngestStats
from ingest.outgoing import AUDIO, CALLS, DEADLETTER, NO_HEADERS, CallTag, Outgoing, TopicKind
from ingest.queues import AudioRoute, GapTally, PartitionQueue
from ingest.settings import IngestSettings
from schemas.deadletter import dead_letter
from schemas.partition import partition_for
from schemas.records import CallEvent, audio_headers
from schemas.topics import AUDIO as AUDIO_TOPIC
from schemas.topics import CALLS as CALLS_TOPIC
from schemas.topics import DEADLETTER as DEADLETTER_TOPIC
from schemas.topics import TopicSpec, prefixed

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Silence one library logger for the duration (an expected refusal is logged once)."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


class SinkError(RuntimeError):
    """Kafka could not be reached at start."""


class RecordSink:
    """Buffered producer for AUDIO, CALLS and DEADLETTER (see module docstring)."""

    def __init__(
        self,
        settings: IngestSettings,
        stats: IngestStats,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.clock = clock
        self.wall_ms = wall_ms
        self.audio_topic = prefixed(AUDIO_TOPIC, settings.topic_prefix)
        self.calls_topic = prefixed(CALLS_TOPIC, settings.topic_prefix)
        self.deadletter_topic = prefixed(DEADLETTER_TOPIC, settings.topic_prefix)
        self._topics: dict[TopicKind, str] = {
            "audio": self.audio_topic,
            "calls": self.calls_topic,
            "deadletter": self.deadletter_topic,
        }
        self._routes: dict[CallTag, AudioRoute] = {}  # live calls' audio routes
        self._producer: AIOKafkaProducer | None = None
        self._partitions: dict[str, int] = {}
        self._queues: dict[tuple[str, int], PartitionQueue] = {}
        self._audio_queues: list[PartitionQueue] = []
        self._gaps: dict[str, GapTally] = {}
        self._closing = False
        self._suspect = False  # a send failed: check the topics before writing again
        self._probe_lock = asyncio.Lock()
        self._last_error_log = 0.0
        self.buffered_bytes = 0

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        deadline = self.clock() + s.connect_timeout_s
        idempotent = s.enable_idempotence != "off"
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=s.bootstrap_servers,
                client_id=f"{s.client_id}-ingest",
                acks="all" if s.acks == "all" or idempotent else int(s.acks),
                enable_idempotence=idempotent,
                max_batch_size=s.batch_max_bytes,
                request_timeout_ms=s.request_timeout_ms,
                retry_backoff_ms=s.retry_backoff_ms,
                linger_ms=0,
            )
            try:
                with _quiet("aiokafka.producer.sender"):  # a refusal is logged below, once
                    await producer.start()
                for spec in (AUDIO_TOPIC, CALLS_TOPIC, DEADLETTER_TOPIC):
                    await self._learn_partitions(producer, spec)
            except (KafkaError, OSError) as exc:
                await producer.stop()
                refused = isinstance(exc, KafkaError) and not exc.retriable
                if idempotent and refused and s.enable_idempotence == "auto":
                    idempotent = False  # e.g. the embedded tansu broker refuses InitProducerId
                    logger.warning(
                        "the broker refuses idempotent producers (%r): sending with acks=%s "
                        "only; a retried send may then be written twice",
                        exc,
                        s.acks,
                    )
                    continue
                if self.clock() >= deadline:
                    raise SinkError(f"Kafka at {s.bootstrap_servers} not usable: {exc}") from exc
                logger.warning("waiting for Kafka at %s: %s", s.bootstrap_servers, exc)
                await asyncio.sleep(0.5)
                continue
            self._producer = producer
            return

    async def _learn_partitions(self, producer: AIOKafkaProducer, spec: TopicSpec) -> None:
        topic = prefixed(spec, self.settings.topic_prefix)
        parts = await producer.partitions_for(topic)
        if not parts:
            raise KafkaError(f"topic {topic} has no partitions: create the topics first")
        self._partitions[topic] = len(parts)

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every buffered record is acked; False if ``timeout_s`` passed first."""
        deadline = self.clock() + timeout_s
        while self.buffered_bytes > 0 or self.in_flight:
            if self._gaps:
                self._emit_gaps()
            if self.clock() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Flush what can be flushed within ``timeout_s``, then stop the producer."""
        flushed = await self.flush(timeout_s)
        if not flushed:
            lost = sum(len(q.pending) for q in self._queues.values())
            logger.error("stopping with %d records (%d bytes) unsent", lost, self.buffered_bytes)
        self._closing = True
        for queue in self._queues.values():
            if queue.task is not None:
                queue.task.cancel()
        await asyncio.gather(
            *(q.task for q in self._queues.values() if q.task is not None),
            return_exceptions=True,
        )
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    @property
    def in_flight(self) -> int:
        """Records handed to the Kafka client and not acknowledged yet."""
        return sum(queue.in_flight for queue in self._queues.values())

    # --- routing ------------------------------------------------------------------------------

    def queue_for(self, topic: str, key: bytes) -> PartitionQueue:
        """The queue a key's records go to (callers cache it per call)."""
        partition = partition_for(key, self._partitions[topic])
        queue = self._queues.get((topic, partition))
        if queue is None:
            queue = PartitionQueue(topic, partition, audio=topic == self.audio_topic)
            self._queues[(topic, partition)] = queue
            if queue.audio:
                self._audio_queues.append(queue)
            queue.task = asyncio.get_running_loop().create_task(self._sender(queue))
        return queue

    # --- enqueue (hot path: no awaits) --------------------------------------------------------

    def write(self, records: list[Outgoing]) -> None:
        """Queue what a session returned, in order, then empty ``records``.

        Audio frames may push out the oldest queued audio when over the bound; lifecycle and
        dead-letter records are never dropped.
        """
        for out in records:
            call = out.call
            if out.topic_kind == AUDIO and call is not None:
                route = self._routes.get(call)
                if route is None:
                    queue = self.queue_for(self.audio_topic, out.key)
                    route = self._routes[call] = AudioRoute(queue, call)
                headers = out.headers = audio_headers(
                    route.static_outbound if out.outbound else route.static,
                    out.seq,
                    out.chunk,
                    out.media_timestamp_ms,
                    route.rate_header,
                    out.received_at_ms,
                    out.offset_ms,
                )
                # an estimate (headers of an audio frame are ~250 bytes): summing them costs more
                size = out.size = len(out.key) + len(out.value) + 64 + 24 * len(headers)
                if size > self.settings.max_record_bytes:
                    self._too_large(out, sum(len(k) + len(v) for k, v in headers))
                    continue
                queue = route.queue
                queue.pending.append(out)
                self.buffered_bytes += size
                if self.buffered_bytes > self.settings.buffer_max_bytes:
                    self._shed()
                elif self._gaps and call.call_sid in self._gaps:
                    self._emit_gaps()
                queue.wake.set()
                continue
            if out.ends_call and call is not None:
                self.flush_gap(call.call_sid)
                self._routes.pop(call, None)
            self._queue_record(self._topics[out.topic_kind], out)
        records.clear()

    def send_record(self, topic: str, key: bytes, value: bytes, read_at: float) -> None:
        """Queue a lifecycle or dead-letter record of the sink's own: never dropped."""
        self._queue_record(topic, Outgoing(CALLS, key, value, read_at))

    def _too_large(self, out: Outgoing, header_bytes: int = 0) -> None:
        """A record Kafka would refuse for ever: dead-letter what it was, without its bytes."""
        self.stats.records_too_large += 1
        size = len(out.key) + len(out.value) + header_bytes
        call_sid = out.key[:128].decode("utf-8", "replace")
        logger.error(
            "call_sid=%s %s record of %d bytes over the %d-byte limit: dead-lettered",
            call_sid,
            out.topic_kind,
            size,
            self.settings.max_record_bytes,
        )
        record = dead_letter(
            "ingest",
            f"{out.topic_kind} record of {size} bytes over the "
            f"{self.settings.max_record_bytes}-byte record limit",
            call_sid=call_sid,
            occurred_at_ms=self.wall_ms(),
        )
        self._queue_record(
            self.deadletter_topic,
            Outgoing(DEADLETTER, out.key[:128], record.to_bytes(), out.read_at),
        )

    def _queue_record(self, topic: str, out: Outgoing) -> None:
        size = len(out.key) + len(out.value) + 64
        if size > self.settings.max_record_bytes:
            self._too_large(out)
            return
        queue = self.queue_for(topic, out.key)
        out.headers = NO_HEADERS
        out.timestamp_ms = self.wall_ms()
        out.size = size
        queue.pending.append(out)
        self.buffered_bytes += out.size
        if self.buffered_bytes > self.settings.buffer_max_bytes:
            self._shed()  # make room by dropping audio: lifecycle records have priority
        queue.wake.set()

    def flush_gap(self, call_sid: str) -> None:
        """Write the pending gap record of a call now (called before its stop record)."""
        tally = self._gaps.pop(call_sid, None)
        if tally is not None:
            self._write_gap(tally)

    # --- shedding -----------------------------------------------------------------------------

    def _shed(self) -> None:
        bound = self.settings.buffer_max_bytes
        queues = self._audio_queues
        while self.buffered_bytes > bound:
            oldest: PartitionQueue | None = None
            for queue in queues:
                if queue.pending and (
                    oldest is None or queue.pending[0].read_at < oldest.pending[0].read_at
                ):
                    oldest = queue
            if oldest is None:
                return  # only lifecycle records left: they are never dropped
            entry = oldest.pending.popleft()
            self.buffered_bytes -= entry.size
            self.stats.frames_dropped += 1
            tag = entry.call
            if tag is not None:
                tally = self._gaps.get(tag.call_sid)
                if tally is None:
                    tally = self._gaps[tag.call_sid] = GapTally(tag, entry.seq)
                tally.count += 1
                tally.first_seq = min(tally.first_seq, entry.seq)
                tally.last_seq = max(tally.last_seq, entry.seq)

    def _emit_gaps(self) -> None:
        if self.buffered_bytes > self.settings.buffer_max_bytes // 2:
            return
        tallies = list(self._gaps.values())
        self._gaps.clear()
        for tally in tallies:
            self._write_gap(tally)

    def _write_gap(self, tally: GapTally) -> None:
        tag = tally.tag
        event = CallEvent(
            kind="gap",
            call_sid=tag.call_sid,
            stream_sid=tag.stream_sid,
            tenant=tag.tenant,
            campaign=tag.campaign,
            custom_parameters=tag.custom_parameters,
            occurred_at_ms=self.wall_ms(),
            expected_sequence=tally.first_seq,
            received_sequence=tally.last_seq + 1,
            dropped_frames=tally.count,
            params={
                "cause": "ingest_buffer_full",
                "first_dropped_sequence": str(tally.first_seq),
                "last_dropped_sequence": str(tally.last_seq),
            },
        )
        logger.warning(
            "call_sid=%s stream_sid=%s dropped %d audio frames (buffer full)",
            tag.call_sid,
            tag.stream_sid,
            tally.count,
        )
        self.send_record(self.calls_topic, tag.call_sid.encode(), event.to_bytes(), self.clock())

    async def _probe(self, producer: AIOKafkaProducer, backoff_s: float) -> None:
        """After a failure, wait until every topic exists again with its partition count.

        A broker that comes back empty (tansu is memory-only; a re-created Kafka cluster)
        must not receive our records before the topics exist: tansu acknowledges writes to
        a missing topic and drops them, Kafka might auto-create it with other partitions.
        """
        async with self._probe_lock:
            while self._suspect:
                try:
                    cluster = await producer.client.fetch_all_metadata()
                except KafkaError:
                    cluster = None
                if cluster is not None and all(
                    len(cluster.partitions_for_topic(topic) or ()) == count
                    for topic, count in self._partitions.items()
                ):
                    self._suspect = False
                    logger.info("Kafka is back with every topic: resuming delivery")
                    return
                await asyncio.sleep(backoff_s)

    # --- sender -------------------------------------------------------------------------------

    async def _sender(self, queue: PartitionQueue) -> None:
        s = self.settings
        linger_s = s.linger_ms / 1000
        backoff_s = s.retry_backoff_ms / 1000
        pending = queue.pending
        while True:
            while not pending:
                queue.wake.clear()
                await queue.wake.wait()
            if linger_s and len(pending) < 64:
                await asyncio.sleep(linger_s)
            producer = self._producer
            if producer is None or not pending:
                await asyncio.sleep(backoff_s)
                continue
            if self._suspect:
                await self._probe(producer, backoff_s)
                if not pending:
                    continue
            batch = producer.create_batch()
            taken: list[Outgoing] = []
            size = 0
            while pending:
                entry = pending[0]
                meta = batch.append(
                    key=entry.key,
                    value=entry.value,
                    timestamp=entry.timestamp_ms,
                    headers=entry.headers,
                )
                if meta is None:
                    break
                pending.popleft()
                taken.append(entry)
                size += entry.size
            queue.in_flight = len(taken)
            try:
                future = await producer.send_batch(batch, queue.topic, partition=queue.partition)
                await future
            except MessageSizeTooLargeError:
                # the broker's limit is below ours: retrying would stall the partition for ever
                queue.in_flight = 0
                self.buffered_bytes -= size
                for entry in taken:
                    self._too_large(entry, sum(len(k) + len(v) for k, v in entry.headers))
                continue
            except KafkaError as exc:
                pending.extendleft(reversed(taken))
                queue.in_flight = 0
                self._suspect = True
                self.stats.produce_retries += 1
                now = self.clock()
                if now - self._last_error_log > 5.0:
                    self._last_error_log = now
                    logger.warning(
                        "Kafka produce to %s[%d] failed, retrying (%d bytes buffered): %r",
                        queue.topic,
                        queue.partition,
                        self.buffered_bytes,
                        exc,
                    )
                if self.buffered_bytes > s.buffer_max_bytes:
                    self._shed()
                await asyncio.sleep(backoff_s)
                continue
            queue.in_flight = 0
            now = self.clock()
            self.buffered_bytes -= size
            stats = self.stats
            stats.records_acked += len(taken)
            observe = stats.produce_latency.observe
            for entry in taken:
                observe(now - entry.read_at)
            if queue.audio:
                stats.frames_acked += len(taken)
            if self._gaps:
                self._emit_gaps()
