"""Batched final decoding across calls: utterance ends from every call share ``finish_batch``.

:class:`BatchDecoder` collects the utterances that calls want decoded; whenever an inference
thread is free it takes every waiting one (up to the recogniser's ``max_batch``) into one
``finish_batch`` call in the executor. An ``urgent`` utterance (a call's last one, cut at
``stop``: a Passthru answer waits for it) goes ahead of every non-urgent one. A failing batch is
retried one utterance at a time, so the error reaches only the call it belongs to.

Under load, speculation goes first: :meth:`BatchDecoder.speculate` (a decode started before the
end of speech is certain) is refused while utterances wait or every inference thread is busy,
so a decode that may be thrown away never delays a final one. The refusals are counted
(``speculative_shed``); the final decode then starts when the end is certain.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from analytics.asr.base import Hypothesis, Recognizer, RecognizerStream
from analytics.asr.vad import SpeechSegment


class BatchDecoder:
    """Collects utterance ends from many calls; one ``finish_batch`` per free inference thread.

    Owned by the :class:`analytics.asr.service.TranscriptionService` of the worker process.
    """

    def __init__(
        self,
        recognizer: Recognizer,
        executor: ThreadPoolExecutor,
        slots: int,
        batch_wait_s: float = 0.0,
    ) -> None:
        self.recognizer = recognizer
        self.batch_wait_s = batch_wait_s
        self.executor = executor
        self._slots = asyncio.Semaphore(slots)
        self._waiting: list[tuple[RecognizerStream, SpeechSegment, asyncio.Future[Hypothesis]]] = []
        self._wakeup = asyncio.Event()
        self._urgent = 0  # how many of the first waiting items are urgent
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.decoded = 0  # utterances in all batches (mean batch = decoded / batches)
        self.speculative_started = self.speculative_shed = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._dispatch(), name="asr-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def decode(
        self, stream: RecognizerStream, utterance: SpeechSegment, *, urgent: bool = False
    ) -> asyncio.Future[Hypothesis]:
        future: asyncio.Future[Hypothesis] = asyncio.get_running_loop().create_future()
        item = (stream, utterance, future)
        if urgent:
            # behind the urgent ones already waiting, ahead of everything else
            self._waiting.insert(self._urgent, item)
            self._urgent += 1
        else:
            self._waiting.append(item)
        self._wakeup.set()
        return future

    def speculate(
        self, stream: RecognizerStream, utterance: SpeechSegment
    ) -> asyncio.Future[Hypothesis] | None:
        """A decode started before the end is certain, or ``None`` (shed) when it would wait."""
        if self._waiting or self._slots.locked():
            self.speculative_shed += 1
            return None
        self.speculative_started += 1
        return self.decode(stream, utterance)

    @property
    def mean_batch(self) -> float:
        return self.decoded / self.batches if self.batches else 0.0

    async def _dispatch(self) -> None:
        while True:
            await self._wakeup.wait()
            await self._slots.acquire()
            if not self._waiting:
                self._slots.release()
                self._wakeup.clear()
                continue
            if self.batch_wait_s > 0 and len(self._waiting) < self.recognizer.max_batch:
                await asyncio.sleep(self.batch_wait_s)  # let utterances of other calls join
            urgent = self._waiting[: self._urgent]
            self._waiting = [w for w in self._waiting if not w[2].cancelled()]
            self._urgent = sum(1 for w in urgent if not w[2].cancelled())
            if not self._waiting:
                self._slots.release()
                self._wakeup.clear()
                continue
            batch = self._waiting[: self.recognizer.max_batch]
            del self._waiting[: len(batch)]
            self._urgent = max(0, self._urgent - len(batch))
            if not self._waiting:
                self._wakeup.clear()
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(
        self, batch: list[tuple[RecognizerStream, SpeechSegment, asyncio.Future[Hypothesis]]]
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            items = [(stream, utt) for stream, utt, _ in batch]
            self.batches += 1
            self.decoded += len(items)
            try:
                results = await loop.run_in_executor(
                    self.executor, self.recognizer.finish_batch, items
                )
            except Exception:  # noqa: BLE001 - isolate the failing call below
                if len(batch) == 1:
                    raise
                results = []
                for stream, utt, future in batch:
                    try:
                        [hyp] = await loop.run_in_executor(
                            self.executor, self.recognizer.finish_batch, [(stream, utt)]
                        )
                    except Exception as exc:  # noqa: BLE001 - handed to the call's session
                        if not future.done():
                            future.set_exception(exc)
                        continue
                    if not future.done():
                        future.set_result(hyp)
                return
            for (_, _, future), hyp in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(hyp)
        except Exception as exc:  # noqa: BLE001 - handed to the call's session
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._slots.release()


class WarmUpBarrier:
    """Makes N warm-up tasks run on N distinct executor threads."""

    def __init__(self, parties: int) -> None:
        self._barrier = threading.Barrier(parties, timeout=120)

    def run(self, func: Callable[[], None]) -> None:
        func()
        self._barrier.wait()
