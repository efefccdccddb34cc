"""Sentiment engines on the VADER human-rated sets (Hutto & Gilbert, ICWSM 2014), in one run.

For each engine and domain (tweets, movie reviews, Amazon reviews, NYT editorials): 3-class
macro-F1 (ground truth rating/4 with neutral band +-0.05, as in the paper) of the engine's own
labels (its calibrated neutral band) and of its score thresholded at +-0.05 as the paper does
for VADER's compound (for VADER the two coincide), binary accuracy on
sentences with |rating| >= 1 (predicted sign of the score), per-utterance latency p50/p95 at
batch 1 (a sample of sentences) and throughput at batch 32. Also the label accuracy on the 40
hand-written caller utterances of ``tests/data/call_centre_sentiment.tsv`` (the product's own
domain; a sanity set, not a benchmark). Evaluation only: nothing here is ever used for training or
calibration.

    .venv/bin/python bench/sentiment.py                       # transformers, onnx, vader
    .venv/bin/python bench/sentiment.py --engines onnx vader --limit 500
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analytics.scoring.engines import build_scorer  # noqa: E402
from analytics.scoring.settings import ScoringSettings  # noqa: E402
from tests.data import call_centre_sentiment  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "sentiment" / "vader-icwsm2014"
DOMAINS = {
    "tweets": "tweets_GroundTruth.txt",
    "movie": "movieReviewSnippets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}
CLASSES = ("negative", "neutral", "positive")


def load(path: Path, limit: int | None) -> list[tuple[float, str]]:
    rows: list[tuple[float, str]] = []
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        for line in fh:
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) < 3:
                continue
            try:
                rating = float(parts[1])
            except ValueError:
                continue
            rows.append((rating, "\t".join(parts[2:]).strip()))
    if limit:
        step = max(1, len(rows) // limit)
        rows = rows[::step][:limit]
    return rows


def truth(rating: float) -> str:
    x = rating / 4.0
    return "positive" if x >= 0.05 else "negative" if x <= -0.05 else "neutral"


def macro_f1(true: Sequence[str], pred: Sequence[str]) -> float:
    f1s = []
    for cls in CLASSES:
        tp = sum(1 for t, p in zip(true, pred, strict=True) if t == cls and p == cls)
        fp = sum(1 for t, p in zip(true, pred, strict=True) if t != cls and p == cls)
        fn = sum(1 for t, p in zip(true, pred, strict=True) if t == cls and p != cls)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return statistics.fmean(f1s)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", nargs="+", default=["transformers", "onnx", "vader"])
    parser.add_argument("--limit", type=int, help="sentences per domain (evenly sampled)")
    parser.add_argument("--latency-n", type=int, default=300, help="batch-1 timing sample")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--vader-weight",
        type=float,
        default=0.0,
        help="also run each model engine blended with VADER at this weight",
    )
    parser.add_argument(
        "--head",
        type=Path,
        help="a head JSON from scripts/train_sentiment_head.py (default: the shipped one)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/sentiment.json")
    args = parser.parse_args()

    data = {name: load(DATA / file, args.limit) for name, file in DOMAINS.items()}
    settings = ScoringSettings(threads=args.threads, head_path=args.head)
    blended = settings.model_copy(update={"vader_weight": args.vader_weight})
    runs = [(engine, settings) for engine in args.engines]
    if args.vader_weight > 0:
        runs += [(e, blended) for e in args.engines if e != "vader"]
    results: dict[str, dict[str, object]] = {}
    for engine_name, run_settings in runs:
        started = time.monotonic()
        scorer = build_scorer(run_settings, engine_name)
        engine = scorer.engine
        load_s = time.monotonic() - started
        per_domain: dict[str, dict[str, float]] = {}
        all_texts: list[str] = []
        for domain, rows in data.items():
            texts = [t for _, t in rows]
            all_texts.extend(texts)
            preds = []
            t0 = time.monotonic()
            for k in range(0, len(texts), 32):
                preds.extend(scorer.score_batch(texts[k : k + 32]))
            elapsed = time.monotonic() - t0
            true = [truth(r) for r, _ in rows]
            labels = [p.label for p in preds]
            paper = [truth(p.score * 4.0) for p in preds]  # the paper's +-0.05 on the score
            strong = [(r, p.score) for (r, _), p in zip(rows, preds, strict=True) if abs(r) >= 1]
            binary = statistics.fmean((r > 0) == (s > 0) for r, s in strong) if strong else 0.0
            per_domain[domain] = {
                "n": len(rows),
                "macro_f1": round(macro_f1(true, labels), 4),
                "macro_f1_paper_thresholds": round(macro_f1(true, paper), 4),
                "binary_acc": round(binary, 4),
                "throughput_b32_per_s": round(len(texts) / elapsed, 1),
            }
            print(f"{engine:>12} {domain:>7}: {per_domain[domain]}", flush=True)
        cc_rows = call_centre_sentiment()
        cc_preds = scorer.score_batch([t for _, t in cc_rows])
        cc_acc = statistics.fmean(p.label == y for p, (y, _) in zip(cc_preds, cc_rows, strict=True))
        print(f"{engine:>12} call-centre set: label accuracy {cc_acc:.3f}", flush=True)
        sample = all_texts[:: max(1, len(all_texts) // args.latency_n)][: args.latency_n]
        scorer.score(sample[0])  # warm-up
        lat = []
        for text in sample:
            t0 = time.perf_counter()
            scorer.score(text)
            lat.append((time.perf_counter() - t0) * 1000)
        total_n = sum(d["n"] for d in per_domain.values())
        total_s = sum(d["n"] / d["throughput_b32_per_s"] for d in per_domain.values())
        results[engine] = {
            "load_s": round(load_s, 2),
            "p50_ms_b1": round(percentile(lat, 0.5), 2),
            "p95_ms_b1": round(percentile(lat, 0.95), 2),
            "throughput_b32_per_s": round(total_n / total_s, 1),
            "call_centre_acc": round(cc_acc, 3),
            "domains": per_domain,
        }
        print(
            f"{engine:>12} latency b1 p50 {results[engine]['p50_ms_b1']} ms, "
            f"p95 {results[engine]['p95_ms_b1']} ms; b32 {results[engine]['throughput_b32_per_s']}"
            f"/s; load {load_s:.1f} s",
            flush=True,
        )
    print(
        "\n| engine | "
        + " | ".join(f"{d} F1 label / F1 +-0.05 / bin acc" for d in DOMAINS)
        + " | call-centre acc | p50 / p95 ms (b1) | texts/s (b32) |"
    )
    print("|---" * (len(DOMAINS) + 4) + "|")
    for engine, res in results.items():
        doms = res["domains"]
        assert isinstance(doms, dict)
        cells = " | ".join(
            f"{doms[d]['macro_f1']:.3f} / {doms[d]['macro_f1_paper_thresholds']:.3f} / "
            f"{doms[d]['binary_acc']:.3f}"
            for d in DOMAINS
        )
        timing = (
            f"{res['call_centre_acc']:.3f} | {res['p50_ms_b1']} / {res['p95_ms_b1']} | "
            f"{res['throughput_b32_per_s']}"
        )
        print(f"| {engine} | {cells} | {timing} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
