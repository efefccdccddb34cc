"""Batched final decoding across calls: utterance ends from every call share ``finish_batch``.

:class:`BatchDecoder` collects the utterances that calls want decoded; whenever an inference
thread is free it takes a share of the waiting ones (the waiting count split over the free
threads, at most the recogniser's ``max_batch``) into one ``finish_batch`` call in the executor.
An ``urgent`` utterance (a call's last one, cut at ``stop``: a Passthru answer waits for it)
goes ahead of every other. A failing batch is retried one utterance at a time, so the error
reaches only the call it belongs to.

Speculation waits its turn, behind every final. :meth:`BatchDecoder.speculate` (a decode asked
for before the end of speech is certain) is queued as speculative: a thread takes it only when no
final waits, so a decode that may be thrown away never delays a final one. When the end of
speech is confirmed, :meth:`BatchDecoder.promote` makes it a final where it stands, so under load
the utterance keeps the place it took at the first silence instead of queueing again after the
full silence. A speculation cancelled while it waits cost nothing (``speculative_dropped``); one
cancelled after it ran was wasted work (``speculative_wasted``).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from analytics.asr.base import Hypothesis, Recognizer, RecognizerStream
from analytics.asr.vad import SpeechSegment

URGENT, FINAL, SPECULATIVE = 0, 1, 2  # the order in which waiting utterances are taken


@dataclass(eq=False)
class _Wanted:
    """One utterance waiting for (or in) a batch."""

    stream: RecognizerStream
    utterance: SpeechSegment
    future: asyncio.Future[Hypothesis]
    rank: int  # URGENT, FINAL or SPECULATIVE
    seq: int  # arrival order within a rank
    speculative: bool = field(init=False)

    def __post_init__(self) -> None:
        self.speculative = self.rank == SPECULATIVE  # asked as a speculation (even if promoted)


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
        self.slots = slots
        self._slots = asyncio.Semaphore(slots)
        self._busy = 0  # batches running
        self._waiting: list[_Wanted] = []
        self._by_future: dict[asyncio.Future[Hypothesis], _Wanted] = {}
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.decoded = 0  # utterances in all batches (mean batch = decoded / batches)
        self.speculative_started = 0  # speculations asked for
        self.speculative_dropped = 0  # cancelled before a thread took them: no work done
        self.speculative_wasted = 0  # decoded, then thrown away

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
        """A final decode: ``urgent`` ones go ahead of every other."""
        return self._queue(stream, utterance, URGENT if urgent else FINAL)

    def speculate(
        self, stream: RecognizerStream, utterance: SpeechSegment
    ) -> asyncio.Future[Hypothesis]:
        """A decode asked for before the end is certain: taken only while no final waits."""
        self.speculative_started += 1
        return self._queue(stream, utterance, SPECULATIVE)

    def promote(self, future: asyncio.Future[Hypothesis], *, urgent: bool = False) -> None:
        """The speculation behind ``future`` is the final result: rank it as a final where it
        stands (a no-op once a thread has taken it)."""
        wanted = self._by_future.get(future)
        if wanted is not None and (urgent or wanted.rank == SPECULATIVE):
            wanted.rank = URGENT if urgent else FINAL

    @property
    def mean_batch(self) -> float:
        return self.decoded / self.batches if self.batches else 0.0

    def _queue(
        self, stream: RecognizerStream, utterance: SpeechSegment, rank: int
    ) -> asyncio.Future[Hypothesis]:
        future: asyncio.Future[Hypothesis] = asyncio.get_running_loop().create_future()
        wanted = _Wanted(stream, utterance, future, rank, next(self._seq))
        self._waiting.append(wanted)
        self._by_future[future] = wanted
        future.add_done_callback(self._forget)
        self._wakeup.set()
        return future

    def _forget(self, future: asyncio.Future[Hypothesis]) -> None:
        self._by_future.pop(future, None)

    def _prune(self) -> None:
        """Drop what was cancelled while waiting (a speculation whose caller spoke again)."""
        kept = []
        for wanted in self._waiting:
            if wanted.future.cancelled():
                self.speculative_dropped += wanted.speculative
            else:
                kept.append(wanted)
        self._waiting = kept

    def _take(self) -> list[_Wanted]:
        """This thread's share of the best-ranked waiting utterances (finals and urgent ones
        together, else speculations), oldest first."""
        finals = [w for w in self._waiting if w.rank != SPECULATIVE]
        group = finals or self._waiting
        group.sort(key=lambda w: (w.rank, w.seq))
        free = max(1, self.slots - self._busy)
        share = min(self.recognizer.max_batch, math.ceil(len(group) / free))
        batch = group[:share]
        taken = set(map(id, batch))
        self._waiting = [w for w in self._waiting if id(w) not in taken]
        return batch

    async def _dispatch(self) -> None:
        while True:
            await self._wakeup.wait()
            await self._slots.acquire()
            self._prune()
            if self._waiting and self.batch_wait_s > 0:
                if len(self._waiting) < self.recognizer.max_batch:
                    await asyncio.sleep(self.batch_wait_s)  # let utterances of other calls join
                    self._prune()
            if not self._waiting:
                self._slots.release()
                self._wakeup.clear()
                continue
            batch = self._take()
            if not self._waiting:
                self._wakeup.clear()
            self._busy += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Wanted]) -> None:
        loop = asyncio.get_running_loop()
        try:
            items = [(w.stream, w.utterance) for w in batch]
            self.batches += 1
            self.decoded += len(items)
            try:
                results = await loop.run_in_executor(
                    self.executor, self.recognizer.finish_batch, items
                )
            except Exception:  # noqa: BLE001 - isolate the failing call below
                if len(batch) == 1:
                    raise
                for wanted in batch:
                    try:
                        [hyp] = await loop.run_in_executor(
                            self.executor,
                            self.recognizer.finish_batch,
                            [(wanted.stream, wanted.utterance)],
                        )
                    except Exception as exc:  # noqa: BLE001 - handed to the call's session
                        self._settle(wanted, exc)
                        continue
                    self._settle(wanted, hyp)
                return
            for wanted, hyp in zip(batch, results, strict=True):
                self._settle(wanted, hyp)
        except Exception as exc:  # noqa: BLE001 - handed to the call's session
            for wanted in batch:
                self._settle(wanted, exc)
        finally:
            self._busy -= 1
            self._slots.release()

    def _settle(self, wanted: _Wanted, result: Hypothesis | BaseException) -> None:
        future = wanted.future
        if future.done():
            self.speculative_wasted += wanted.speculative and future.cancelled()
        elif isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class WarmUpBarrier:
    """Makes N warm-up tasks run on N distinct executor threads."""

    def __init__(self, parties: int) -> None:
        self._barrier = threading.Barrier(parties, timeout=120)

    def run(self, func: Callable[[], None]) -> None:
        func()
        self._barrier.wait()
