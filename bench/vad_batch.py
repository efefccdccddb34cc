"""VAD cost per call, one call at a time against every call's frames in one batch.

Plays N calls of real speech (the demo calls, 8 kHz, 100 ms frames) through the worker's front
end and Silero VAD, frame step by frame step: once with each call's frame through its own
segmenter (``Segmenter.feed``, as before session 9), once with the step's frames of all calls
together (``analytics.asr.vadbatch.segment_many``, what the worker does now when frames of
several calls wait). Prints CPU per second of audio per call and checks that both give the same
cuts. On demand only (2-core machine, one thread: the VAD runs in one thread in the worker).

    .venv/bin/python bench/vad_batch.py --calls 1,4,8,16 --seconds 20
"""

from __future__ import annotations

import argparse
import sys
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analytics.asr.frontend import FrontEnd, FrontEndConfig  # noqa: E402
from analytics.asr.vad import (  # noqa: E402
    RATE_HZ,
    Segmenter,
    SegmentResult,
    SileroVad,
    SpeechSegment,
    VadConfig,
)
from analytics.asr.vadbatch import segment_many  # noqa: E402

CALLS = ROOT / "demo" / "calls"
FRAME = 1600  # bytes: 100 ms of 8 kHz PCM16
CONFIG = VadConfig(early_end_ms=200)
FRONT = FrontEndConfig(agc=True)


def call_pcm() -> list[bytes]:
    """Each demo call's PCM16."""
    out = []
    for path in sorted(CALLS.glob("*.wav")):
        with wave.open(str(path), "rb") as w:
            out.append(w.readframes(w.getnframes()))
    return out


def frames_of(pcm: bytes, seconds: float, shift: int) -> list[bytes]:
    n = int(seconds * 10)
    data = (pcm * (1 + int(seconds * 16000) // max(1, len(pcm))))[: n * FRAME]
    frames = [data[i : i + FRAME] for i in range(0, len(data), FRAME)]
    return frames[shift:] + frames[:shift]


def cuts(results: list[list[SegmentResult]]) -> list[list[tuple[int, int]]]:
    return [
        [(e.start_ms, e.end_ms) for r in call for e in r.events if isinstance(e, SpeechSegment)]
        for call in results
    ]


Results = list[list[SegmentResult]]


def run(vad: SileroVad, calls: list[list[bytes]], batched: bool) -> tuple[float, Results]:
    segmenters = [Segmenter(vad, CONFIG) for _ in calls]
    fronts = [FrontEnd(8000, FRONT, RATE_HZ) for _ in calls]
    results: Results = [[] for _ in calls]
    steps = min(len(c) for c in calls)
    t0 = time.thread_time()
    for j in range(steps):
        if batched:
            jobs = [(s, f, c[j], 8000) for s, f, c in zip(segmenters, fronts, calls, strict=True)]
            for k, result in enumerate(segment_many(jobs)):
                assert isinstance(result, SegmentResult), result
                results[k].append(result)
        else:
            for k, (s, f, c) in enumerate(zip(segmenters, fronts, calls, strict=True)):
                results[k].append(s.feed(f.process(c[j], 8000)))
    return time.thread_time() - t0, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1,4,8,16")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    vad = SileroVad()
    sources = call_pcm()
    print(f"{'calls':>5} {'one at a time':>16} {'batched':>10} {'ratio':>6}  (ms CPU / audio s)")
    for n in (int(x) for x in args.calls.split(",")):
        calls = [frames_of(sources[i % len(sources)], args.seconds, 7 * i) for i in range(n)]
        audio_s = n * min(len(c) for c in calls) / 10
        alone_s, alone = run(vad, calls, batched=False)
        batch_s, batch = run(vad, calls, batched=True)
        assert cuts(alone) == cuts(batch), "batched cuts differ"
        a, b = 1000 * alone_s / audio_s, 1000 * batch_s / audio_s
        print(f"{n:>5} {a:>16.2f} {b:>10.2f} {b / a:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
