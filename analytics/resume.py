"""Rebuilds :class:`~analytics.asr.progress.CallProgress` from ``agentstream.transcripts`` for the
audio partitions a worker is assigned (transcripts are co-partitioned with audio by call SID).

Reads the last ``window_h`` hours of each partition (Kafka's time index; tansu has none, so it
reads from the beginning and skips older records unparsed), up to the high-water mark, within
``timeout_s``; on timeout the worker goes on without the missing markers (it then transcribes
that audio again, as it did before markers existed) and says so in the log.
"""

from __future__ import annotations

import logging
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from analytics.asr.progress import CallProgress
from schemas.records import Transcript

logger = logging.getLogger(__name__)


class ProgressLoader:
    """Loads the markers of a partition once per assignment (:meth:`ensure`)."""

    def __init__(
        self,
        bootstrap: str,
        transcripts_topic: str,
        progress: CallProgress,
        *,
        window_h: float = 6.0,
        timeout_s: float = 30.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = transcripts_topic
        self.progress = progress
        self.window_h = window_h
        self.timeout_s = timeout_s
        self.done: set[int] = set()

    def forget(self, partitions: set[int]) -> None:
        self.done -= partitions
        self.progress.forget(partitions)

    async def ensure(self, partitions: set[int]) -> None:
        missing = partitions - self.done
        if not missing:
            return
        started = time.monotonic()
        try:
            read = await self._load(missing)
        except KafkaError as exc:
            logger.warning("per-call progress of partitions %s not loaded: %r", missing, exc)
            read = -1
        self.done |= missing
        logger.info(
            "per-call progress of partitions %s: %d transcripts read in %.2f s",
            sorted(missing),
            read,
            time.monotonic() - started,
        )

    async def _load(self, partitions: set[int]) -> int:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
            group_id=None,
        )
        await consumer.start()
        read = 0
        try:
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            since_ms = int((time.time() - self.window_h * 3600) * 1000)
            found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
            for tp in tps:
                at = found.get(tp)
                if at is None:
                    await consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, at.offset)
            pending = set(tps)
            deadline = time.monotonic() + self.timeout_s
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=100, max_records=5000)
                for tp, records in batches.items():
                    for record in records:
                        if record.timestamp < since_ms or record.value is None:
                            continue
                        try:
                            transcript = Transcript.model_validate(orjson.loads(record.value))
                        except (ValidationError, orjson.JSONDecodeError):
                            continue
                        self.progress.note(transcript, tp.partition)
                        read += 1
                for tp in list(pending):
                    high = consumer.highwater(tp)
                    if high is not None and await consumer.position(tp) >= high:
                        pending.discard(tp)
                if pending and time.monotonic() > deadline:
                    logger.error(
                        "per-call progress not loaded within %.0f s for %s: audio there may be "
                        "transcribed again",
                        self.timeout_s,
                        sorted(tp.partition for tp in pending),
                    )
                    break
        finally:
            await consumer.stop()
        return read
