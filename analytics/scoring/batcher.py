"""Micro-batching of sentiment requests from many calls into one model call.

Utterances that arrive together (many calls ending a sentence at once) are scored in one batch:
the first request opens a batch, which is sent to the executor when it holds ``max_size`` texts
or ``max_wait_ms`` after it opened, whichever comes first, so a lone utterance waits at most
``max_wait_ms``. Inference runs in a bounded thread pool, never on the event loop; while all
executor threads are busy new requests keep accumulating into the next batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from analytics.scoring.sentiment import SentimentScorer
from schemas.records import Sentiment

logger = logging.getLogger(__name__)


class MicroBatcher:
    """Async front of a :class:`SentimentScorer`: ``await batcher.score(text)``."""

    def __init__(
        self,
        scorer: SentimentScorer,
        *,
        max_wait_ms: float = 10.0,
        max_size: int = 32,
        executor_workers: int = 1,
    ) -> None:
        self.scorer = scorer
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_size = max_size
        self._executor = ThreadPoolExecutor(
            max_workers=executor_workers, thread_name_prefix="sentiment"
        )
        self._slots = asyncio.Semaphore(executor_workers)
        self._pending: list[tuple[str, asyncio.Future[Sentiment]]] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.texts = 0

    async def score(self, text: str) -> Sentiment:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Sentiment] = loop.create_future()
        self._pending.append((text, future))
        if len(self._pending) >= self.max_size:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = loop.call_later(self.max_wait_s, self._flush)
        return await future

    async def score_many(self, texts: Sequence[str]) -> list[Sentiment]:
        return list(await asyncio.gather(*(self.score(t) for t in texts)))

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        batch, self._pending = self._pending[: self.max_size], self._pending[self.max_size :]
        if self._pending:
            self._flush_handle = asyncio.get_running_loop().call_later(0, self._flush)
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[str, asyncio.Future[Sentiment]]]) -> None:
        texts = [text for text, _ in batch]
        async with self._slots:
            loop = asyncio.get_running_loop()
            try:
                results = await loop.run_in_executor(self._executor, self.scorer.score_batch, texts)
            except Exception as exc:  # noqa: BLE001  (any model failure goes to every waiter)
                logger.exception("sentiment batch of %d failed", len(texts))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
        self.batches += 1
        self.texts += len(texts)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._executor.shutdown(wait=False, cancel_futures=True)
