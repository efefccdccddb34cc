"""WER per corpus tier, per channel and per model tier, through the worker's streaming path.

Each file is sent as one call through what a live call goes through (see asr_harness.py): the
channel (``plain``: 8 kHz; ``telephone``: 8 kHz, 300-3400 Hz band, G.711 mu-law round trip; see
channel.py), 100 ms PCM16 frames, per-frame resampling to 16 kHz, Silero VAD utterance cutting,
the configured recogniser with the worker's settings. Both sides are normalised (case,
punctuation, numbers) by analytics.asr_metrics before scoring. Everything is deterministic: the
same command gives the same WER (timings are CPU time and vary a little).

    .venv/bin/python bench/asr_wer.py                                 # tiers A+B, plain + telephone
    .venv/bin/python bench/asr_wer.py --channel telephone --model-tiers fast,accurate
    .venv/bin/python bench/asr_wer.py --channel none,plain,band,mulaw,telephone
    .venv/bin/python bench/asr_wer.py --write-audio /tmp/tel   # also save the degraded set (WAV)
    AGENTSTREAM_WORKER_WHISPER_BEAM_SIZE=5 .venv/bin/python bench/asr_wer.py   # any setting
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, cast

import soundfile as sf
from asr_harness import CORPUS, ROOT, StreamPath, TimedRecognizer, channel_audio, corpus_rows

from agentstream.sim.channel import CHANNELS, Channel
from analytics.asr.engines import load_recognizer
from analytics.asr.models import TIERS, Tier
from analytics.asr.vad import SileroVad
from analytics.asr.wer import word_errors
from analytics.settings import WorkerSettings
from analytics.worker import service_config


def settings_for(tier: str | None, base: WorkerSettings) -> WorkerSettings:
    if tier is None:
        return base
    return base.model_copy(update={"whisper_tier": cast(Tier, tier)})


async def run_condition(
    settings: WorkerSettings,
    rows: list[dict[str, str]],
    base: Path,
    channel: Channel,
    show_errors: float,
    write_audio: Path | None,
) -> dict[str, Any]:
    recognizer = TimedRecognizer(load_recognizer(settings))
    config = service_config(settings)
    path = StreamPath(recognizer, config, SileroVad(model=settings.vad_model))
    await path.start()
    per_tier: dict[str, list[int]] = {}
    audio_s = 0.0
    texts: dict[str, str] = {}
    wall0 = time.perf_counter()
    try:
        for row in rows:
            audio, rate = channel_audio(base / row["file"], channel)
            if write_audio is not None:
                out = write_audio / channel / (Path(row["file"]).stem + ".wav")
                out.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(out), audio, rate, subtype="PCM_16")
            transcripts = await path.call(audio, rate, call_sid=Path(row["file"]).stem)
            text = " ".join(t.text for t in transcripts).strip()
            texts[row["file"]] = text
            errors, words = word_errors(row["transcript"], text)
            for key in (row["tier"], "all"):
                acc = per_tier.setdefault(key, [0, 0, 0])
                acc[0] += errors
                acc[1] += words
                acc[2] += 1
            audio_s += audio.shape[0] / rate
            if words and errors / words > show_errors:
                print(f"    {errors}/{words} {row['file']}: {text[:90]!r}")
    finally:
        await path.stop()
    utts = max(1, recognizer.utterances)
    return {
        "channel": channel,
        "wer": {k: v[0] / v[1] for k, v in per_tier.items() if v[1]},
        "errors_words": {k: v[:2] for k, v in per_tier.items()},
        "audio_s": round(audio_s, 1),
        "utterances": recognizer.utterances,
        "decode_cpu_rtf": recognizer.cpu_s / audio_s if audio_s else 0.0,
        "decode_cpu_ms_per_utt": 1000 * recognizer.cpu_s / utts,
        "decode_wall_ms_per_utt": 1000 * recognizer.wall_s / utts,
        "wall_s": round(time.perf_counter() - wall0, 1),
        "texts": texts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--tiers", default="A,B", help="comma-separated corpus tiers (A,B,C)")
    parser.add_argument(
        "--channel",
        default="plain,telephone",
        help=f"comma-separated channels: {', '.join(CHANNELS)} (none = the 16 kHz originals)",
    )
    parser.add_argument(
        "--model-tiers",
        default="",
        help=f"comma-separated model tiers ({', '.join(TIERS)}); default: the worker's settings",
    )
    parser.add_argument("--limit", type=int, default=0, help="first N utterances only")
    parser.add_argument("--show-errors", type=float, default=0.5, help="print utts above this WER")
    parser.add_argument("--write-audio", type=Path, help="save each channel's audio here (WAV)")
    parser.add_argument("--label", default="", help="a name for this run in the JSON")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "asr_wer.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    base_settings = WorkerSettings()
    corpus_tiers = [t.strip() for t in args.tiers.split(",") if t.strip()]
    rows = corpus_rows(args.corpus, corpus_tiers)
    if args.limit:
        rows = rows[: args.limit]
    channels = [cast(Channel, c.strip()) for c in args.channel.split(",") if c.strip()]
    for channel in channels:
        if channel not in CHANNELS:
            parser.error(f"unknown channel {channel!r}")
    model_tiers: list[str | None] = [t.strip() for t in args.model_tiers.split(",") if t.strip()]
    if not model_tiers:
        model_tiers = [None]
    report: dict[str, Any] = {
        "label": args.label,
        "settings": {
            k: str(v)
            for k, v in base_settings.model_dump().items()
            if k.startswith(("whisper", "vosk", "vad", "asr"))
        },
        "corpus_tiers": corpus_tiers,
        "runs": [],
    }
    order = [*corpus_tiers, "all"]
    print(f"{len(rows)} utterances, corpus tiers {'+'.join(corpus_tiers)}")
    header = " ".join(f"{t if t != 'all' else '+'.join(corpus_tiers):>7}" for t in order)
    print(f"{'model':>9} {'channel':>9} {header} {'utts':>5} {'cpu RTF':>7} {'ms/utt':>6}")
    for tier in model_tiers:
        settings = settings_for(tier, base_settings)
        for channel in channels:
            result = asyncio.run(
                run_condition(
                    settings, rows, args.corpus.parent, channel, args.show_errors, args.write_audio
                )
            )
            result["model_tier"] = tier or str(settings.whisper_model_path or "default")
            wers = " ".join(f"{result['wer'].get(t, 0.0):>7.2%}" for t in order)
            print(
                f"{tier or 'settings':>9} {channel:>9} {wers} {result['utterances']:>5} "
                f"{result['decode_cpu_rtf']:>7.3f} {result['decode_cpu_ms_per_utt']:>6.0f}",
                flush=True,
            )
            report["runs"].append(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
