"""The VAD of every call in a worker, batched: one model run scores the next window of each.

Each call's frames used to go through the VAD one call at a time, two model rows per window
(its two states). :class:`VadBatcher` takes the frames that calls hand it while the VAD thread
is busy, or in the same event-loop turn (one fetch from Kafka brings frames of many calls),
and runs them together in that thread (:func:`segment_many`): the front end and the window
cutting per call, then the model once per window step for all of them (:func:`score_many`),
then each call's utterance cutting. Silero v6.2 treats batch rows as independent streams, to
the bit, so every call's probabilities, cuts and utterance ids are exactly those of a run of its
own (``tests/unit/asr/test_vad_batch.py``). One model run for 8 calls costs about 3.5 of one
call's runs, 16 about 6.4.

A call's failure (a bad frame in the front end) fails that call's frame only; a model failure
fails the frames of the batch (each call's transcriber then restarts its segmenter, as on any
VAD error).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from analytics.asr.frontend import FrontEnd
from analytics.asr.vad import Segmenter, SegmentResult, Windows


def score_many(items: Sequence[tuple[Segmenter, Windows]]) -> list[list[float]]:
    """Every window's speech probability, for several calls (each segmenter at most once):
    window step j of every call in one model run."""
    probs: list[list[float]] = [[] for _ in items]
    steps = max((len(windows.audio) for _, windows in items), default=0)
    for j in range(steps):
        wanted: list[int] = []  # items whose window j needs the model
        for k, (segmenter, windows) in enumerate(items):
            if j < len(windows.audio):
                prob = segmenter.gate(windows, j)
                probs[k].append(-1.0 if prob is None else prob)
                if prob is None:
                    wanted.append(k)
        if not wanted:
            continue
        first = items[wanted[0]][0]
        assert first.vad is not None  # gate() answers without a model
        scores = first.vad.probabilities_many(
            [items[k][1].audio[j] for k in wanted], [items[k][0].states for k in wanted]
        )
        row = 0
        for k in wanted:
            segmenter, windows = items[k]
            width = len(segmenter.states)
            probs[k][j] = Segmenter.pick(windows, j, scores[row : row + width])
            row += width
    return probs


Job = tuple[Segmenter, FrontEnd, bytes, int]


def segment_many(jobs: Sequence[Job]) -> list[SegmentResult | BaseException]:
    """Several calls' frames through front end, VAD and cutting (in the VAD thread)."""
    out: list[SegmentResult | BaseException] = [RuntimeError("not run")] * len(jobs)
    taken: list[tuple[int, Segmenter, Windows]] = []
    for i, (segmenter, front, pcm, rate_hz) in enumerate(jobs):
        try:
            taken.append((i, segmenter, segmenter.take(front.process(pcm, rate_hz))))
        except Exception as exc:  # noqa: BLE001 - this call's frame only
            out[i] = exc
    try:
        probs = score_many([(segmenter, windows) for _, segmenter, windows in taken])
    except Exception as exc:  # noqa: BLE001 - the model failed: every frame of the batch
        for i, _, _ in taken:
            out[i] = exc
        return out
    for (i, segmenter, windows), p in zip(taken, probs, strict=True):
        try:
            out[i] = segmenter.cut(windows, p)
        except Exception as exc:  # noqa: BLE001 - this call's frame only
            out[i] = exc
    return out


class VadBatcher:
    """Hands calls' frames to the VAD thread in batches; owned by the worker's transcription
    service (one per process), used by each call's transcriber from the event loop."""

    def __init__(self, executor: ThreadPoolExecutor, wait_s: float = 0.0) -> None:
        self.executor = executor
        self.wait_s = wait_s  # an idle VAD thread waits this long for more calls' frames
        self._waiting: list[tuple[Job, asyncio.Future[SegmentResult]]] = []
        self._busy = False  # a batch is in the VAD thread, or about to go
        self.batches = 0
        self.frames = 0  # in all batches (mean batch = frames / batches)

    async def segment(
        self, segmenter: Segmenter, front: FrontEnd, pcm: bytes, rate_hz: int
    ) -> SegmentResult:
        """One frame of one call through the VAD; a call awaits each before its next."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SegmentResult] = loop.create_future()
        self._waiting.append(((segmenter, front, pcm, rate_hz), future))
        if not self._busy:
            self._busy = True
            if self.wait_s > 0:
                loop.call_later(self.wait_s, self._dispatch)
            else:
                loop.call_soon(self._dispatch)  # frames handed over in this loop turn join
        return await future

    def _dispatch(self) -> None:
        batch, self._waiting = self._waiting, []
        if not batch:
            self._busy = False
            return
        self.batches += 1
        self.frames += len(batch)
        loop = asyncio.get_running_loop()
        try:
            done = loop.run_in_executor(self.executor, segment_many, [job for job, _ in batch])
        except RuntimeError as exc:  # the executor is shut down: the worker is stopping
            self._busy = False
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        done.add_done_callback(lambda f: self._finished(batch, f))

    def _finished(
        self,
        batch: list[tuple[Job, asyncio.Future[SegmentResult]]],
        done: asyncio.Future[list[SegmentResult | BaseException]],
    ) -> None:
        if done.cancelled():
            results: list[SegmentResult | BaseException] = [asyncio.CancelledError()] * len(batch)
        elif done.exception() is not None:
            results = [done.exception() or RuntimeError("VAD failed")] * len(batch)
        else:
            results = done.result()
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # its call was cancelled meanwhile
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        self._dispatch()  # what came in meanwhile, or idle again
