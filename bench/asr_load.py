"""Concurrent live calls through the worker's transcription engine, paced at real time.

Each call streams 8 kHz PCM16 frames of 100 ms at real time: corpus utterances (tiers A+B)
separated by 1 s pauses, looped, so every call speaks continuously. Frames go through the same
TranscriptionService the worker runs (VAD, batched Whisper decode in the executor, redaction),
with an in-memory sink instead of Kafka (the broker hop is measured by bench/e2e.py). Reported per
load level: final transcripts, latency from the ingest receipt of the last speech frame to the
transcript (includes the VAD's end-of-speech silence), CPU, RSS and mean batch size.

    .venv/bin/python bench/asr_load.py                       # 4, 8, 12, 16, 20 calls
    .venv/bin/python bench/asr_load.py --calls 16,24 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import resource
import time
from pathlib import Path

# as the worker runs (agentstream.cli): one BLAS thread, set before numpy loads
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402

from analytics.asr.audio import chunks, float_to_pcm16, read_audio  # noqa: E402
from analytics.asr.engines import load_recognizer  # noqa: E402
from analytics.asr.service import TranscriptionService  # noqa: E402
from analytics.asr.vad import SileroVad  # noqa: E402
from analytics.settings import WorkerSettings  # noqa: E402
from analytics.worker import load_rules, make_redactor, service_config  # noqa: E402
from schemas.records import AudioFrameMeta, DeadLetter, Transcript  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "speech" / "corpus.tsv"
RATE = 8000
FRAME_MS = 100


class Sink:
    def __init__(self) -> None:
        self.finals: list[Transcript] = []
        self.partials = 0
        self.dead: list[DeadLetter] = []

    async def publish(self, transcript: Transcript) -> None:
        if transcript.is_final:
            self.finals.append(transcript)
        else:
            self.partials += 1

    async def dead_letter(self, record: DeadLetter) -> None:
        self.dead.append(record)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def call_audio(tiers: str, max_utt_s: float) -> list[bytes]:
    rows = [r for r in csv.DictReader(CORPUS.open(), delimiter="\t") if r["tier"] in tiers]
    rows = [r for r in rows if float(r["duration_s"]) <= max_utt_s]
    pause = np.zeros(RATE, dtype=np.float32)
    parts: list[np.ndarray] = []
    for row in rows:
        audio, _ = read_audio(CORPUS.parent / row["file"], RATE)
        parts += [audio, pause]
    return chunks(float_to_pcm16(np.concatenate(parts)), RATE, FRAME_MS)


async def run_level(
    settings: WorkerSettings, n_calls: int, seconds: float, frames: list[bytes], vad: SileroVad
) -> dict[str, float]:
    sink = Sink()
    service = TranscriptionService(
        load_recognizer(settings),
        sink,
        service_config(settings),
        vad=vad,
        redact=make_redactor(load_rules(settings)),
    )
    await service.start()
    rss0 = rss_mb()
    t0, c0 = time.monotonic(), cpu_s()
    late_frames = 0

    async def call(i: int) -> None:
        nonlocal late_frames
        sid = f"CA{i:04d}"
        offset = (i * 7919 * 3) % len(frames)  # calls start at different points of the audio
        start = time.monotonic() + i * FRAME_MS / 1000 / max(1, n_calls)
        k = 0
        while True:
            due = start + k * FRAME_MS / 1000
            if due - t0 > seconds:
                return
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.05:
                late_frames += 1
            meta = AudioFrameMeta(
                call_sid=sid,
                stream_sid=f"S{sid}",
                sequence_number=k + 1,
                sample_rate_hz=RATE,
                received_at_ms=int(time.time() * 1000),
                offset_ms=k * FRAME_MS,
            )
            service.on_frame(meta, frames[(offset + k) % len(frames)], lambda: None)
            k += 1

    await asyncio.gather(*(call(i) for i in range(n_calls)))
    wall = time.monotonic() - t0
    cpu = cpu_s() - c0
    backlog = service.queued
    rss1 = rss_mb()
    mean_batch = service.decoder.mean_batch
    vad = service.vad_batcher
    vad_batch = vad.frames / vad.batches if vad.batches else 0.0
    await service.stop()
    # skip the first 5 s (model warm-up, calls starting mid-utterance)
    lat = np.array(
        [t.latency_ms for t in sink.finals if t.produced_at_ms / 1000 - time.time() + wall > 5]
        or [t.latency_ms for t in sink.finals]
        or [0.0]
    )
    return {
        "calls": n_calls,
        "seconds": round(wall, 1),
        "finals": len(sink.finals),
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "max_ms": float(lat.max()),
        "cpu_cores": cpu / wall,
        "cpu_per_call_pct": 100 * cpu / wall / n_calls,
        "rss_mb": rss1,
        "rss_growth_mb": rss1 - rss0,
        "mean_batch": mean_batch,
        "vad_batch": vad_batch,
        "backlog_frames": backlog,
        "late_frames": late_frames,
        "errors": len(sink.dead),
        "loadavg_1m": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="4,8,12,16,20", help="load levels (concurrent calls)")
    parser.add_argument("--seconds", type=float, default=40.0, help="duration per level")
    parser.add_argument("--tiers", default="AB")
    parser.add_argument("--max-utterance-s", type=float, default=12.0)
    parser.add_argument("--budget-ms", type=float, default=800.0, help="p95 latency budget")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "asr_load.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = WorkerSettings()
    frames = call_audio(args.tiers, args.max_utterance_s)
    vad = SileroVad(model=settings.vad_model)
    print(
        f"engine {settings.asr_engine}, {settings.executor_workers} inference threads, "
        f"batch <= {settings.whisper_batch_max}, window >= {settings.whisper_min_window_s} s, "
        f"end-of-speech silence {settings.vad_min_silence_ms} ms, {os.cpu_count()} CPUs"
    )
    print(
        f"{'calls':>5} {'finals':>6} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'CPU':>5} "
        f"{'%/call':>6} {'RSS MB':>7} {'batch':>5} {'VAD':>5} {'backlog':>7} {'load':>5}"
    )
    results = []
    held = 0
    for n in (int(x) for x in args.calls.split(",")):
        r = asyncio.run(run_level(settings, n, args.seconds, frames, vad))
        results.append(r)
        print(
            f"{n:>5} {r['finals']:>6} {r['p50_ms']:>7.0f} {r['p95_ms']:>7.0f} {r['max_ms']:>7.0f} "
            f"{r['cpu_cores']:>5.2f} {r['cpu_per_call_pct']:>6.1f} {r['rss_mb']:>7.0f} "
            f"{r['mean_batch']:>5.2f} {r['vad_batch']:>5.2f} {r['backlog_frames']:>7} "
            f"{r['loadavg_1m']:>5.1f}",
            flush=True,
        )
        if r["p95_ms"] < args.budget_ms and r["backlog_frames"] < n * 5:
            held = max(held, n)
    print(f"most calls held with final p95 < {args.budget_ms:.0f} ms: {held}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"held": held, "levels": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
