"""WER per corpus tier at 8 and 16 kHz, and the real-time factor, through the worker's ASR path.

Each file goes through what a live call goes through: (8 kHz resampling,) 100 ms PCM16 frames,
Silero VAD utterance cutting, the configured recogniser. Both sides are normalised (case,
punctuation, numbers) by analytics.asr.wer before scoring.

    .venv/bin/python bench/asr_wer.py                     # tiers A+B, 8 and 16 kHz
    .venv/bin/python bench/asr_wer.py --tiers A,B,C --rates 8000
    AGENTSTREAM_WORKER_WHISPER_MIN_WINDOW_S=30 .venv/bin/python bench/asr_wer.py   # stock padding
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

from analytics.asr.engines import load_recognizer
from analytics.asr.offline import transcribe_file
from analytics.asr.vad import SileroVad
from analytics.asr.wer import word_errors
from analytics.settings import WorkerSettings
from analytics.worker import service_config

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "speech" / "corpus.tsv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--tiers", default="A,B", help="comma-separated tiers (A,B,C)")
    parser.add_argument("--rates", default="8000,16000", help="comma-separated sample rates")
    parser.add_argument("--limit", type=int, default=0, help="first N utterances only")
    parser.add_argument("--show-errors", type=float, default=0.5, help="print utts above this WER")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "asr_wer.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    settings = WorkerSettings()
    recognizer = load_recognizer(settings)
    t0 = time.perf_counter()
    recognizer.warm_up()
    load_s = time.perf_counter() - t0
    vad = SileroVad()
    vad_config = service_config(settings).vad
    tiers = [t.strip() for t in args.tiers.split(",") if t.strip()]
    rows = [r for r in csv.DictReader(args.corpus.open(), delimiter="\t") if r["tier"] in tiers]
    if args.limit:
        rows = rows[: args.limit]
    base = args.corpus.parent
    report: dict[str, object] = {
        "engine": recognizer.engine,
        "settings": {
            k: str(v)
            for k, v in settings.model_dump().items()
            if k.startswith(("whisper", "vosk", "vad", "asr"))
        },
        "load_s": round(load_s, 2),
        "results": [],
    }
    print(f"engine {recognizer.engine}, {len(rows)} utterances, tiers {'+'.join(tiers)}")
    print(f"{'rate':>6} {'tier':>4} {'utts':>5} {'words':>6} {'WER':>7} {'audio s':>8} {'RTF':>6}")
    for rate in (int(r) for r in args.rates.split(",")):
        per_tier: dict[str, list[int]] = {}
        audio_s = elapsed_s = 0.0
        total = [0, 0]
        for row in rows:
            result = transcribe_file(base / row["file"], recognizer, vad, vad_config, rate)
            errors, words = word_errors(row["transcript"], result.text)
            acc = per_tier.setdefault(row["tier"], [0, 0, 0])
            acc[0] += errors
            acc[1] += words
            acc[2] += 1
            total[0] += errors
            total[1] += words
            audio_s += result.audio_s
            elapsed_s += result.elapsed_s
            if words and errors / words > args.show_errors:
                print(f"    {errors}/{words} {row['file']}: {result.text[:90]!r}")
        for tier, (errors, words, n) in sorted(per_tier.items()):
            print(f"{rate:>6} {tier:>4} {n:>5} {words:>6} {errors / words:>7.2%}")
            report["results"].append(  # type: ignore[attr-defined]
                {"rate": rate, "tier": tier, "utterances": n, "words": words, "wer": errors / words}
            )
        rtf = elapsed_s / audio_s if audio_s else 0.0
        print(
            f"{rate:>6} {'all':>4} {len(rows):>5} {total[1]:>6} {total[0] / total[1]:>7.2%} "
            f"{audio_s:>8.1f} {rtf:>6.3f}"
        )
        report["results"].append(  # type: ignore[attr-defined]
            {
                "rate": rate,
                "tier": "+".join(tiers),
                "utterances": len(rows),
                "words": total[1],
                "wer": total[0] / total[1],
                "audio_s": audio_s,
                "rtf": rtf,
            }
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
