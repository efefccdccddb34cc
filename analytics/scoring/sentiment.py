"""Sentiment scoring of one utterance or a batch: the scorer interface and its shared parts.

Every engine maps text to :class:`schemas.records.Sentiment`: a score in [-1, 1] (positive minus
negative probability for the model engines, VADER's compound score for ``vader``), a label and the
engine's confidence in that label. This module is the interface only and imports no engine: the
engines are plain classes (:mod:`analytics.scoring.engines`, :mod:`analytics.scoring.minilm`)
built by :func:`analytics.scoring.engines.build_scorer`; the faust agent drives one through
``analytics.scoring.batcher.MicroBatcher`` so utterances from many calls share one model call.

The embedding engines put a small logistic-regression head over mean-pooled all-MiniLM-L6-v2
embeddings, stored as JSON (no pickle) with its calibrated neutral band. Two heads ship:
``analytics/data/sentiment_finetuned.json`` (the transformers engine's default) goes with a
low-rank adapter of the encoder (``sentiment_adapter.safetensors``, merged into the weights at
load; ``scripts/finetune_sentiment.py``); ``analytics/data/sentiment_head.json`` (the onnx
engine's default, which cannot change its encoder) sits on the plain encoder
(``scripts/train_sentiment_head.py``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from schemas.records import Sentiment

__all__ = [
    "DEFAULT_FINETUNED_HEAD_PATH",
    "DEFAULT_HEAD_PATH",
    "LinearHead",
    "SentimentError",
    "SentimentScorer",
    "label_for",
]

DEFAULT_HEAD_PATH = Path(__file__).parent.parent / "data" / "sentiment_head.json"
DEFAULT_FINETUNED_HEAD_PATH = Path(__file__).parent.parent / "data" / "sentiment_finetuned.json"
LABELS: tuple[Literal["negative"], Literal["neutral"], Literal["positive"]] = (
    "negative",
    "neutral",
    "positive",
)
FloatArray = npt.NDArray[np.float32]


class SentimentError(RuntimeError):
    """A sentiment model could not be loaded or run (not retriable: fix the configuration)."""


def label_for(score: float, band: float) -> Literal["negative", "neutral", "positive"]:
    """Three-way label of a [-1, 1] score with a symmetric neutral band."""
    if score <= -band:
        return "negative"
    if score >= band:
        return "positive"
    return "neutral"


class SentimentScorer:
    """Interface of every engine: one utterance, or a batch in one model call."""

    engine: str = "base"

    def score(self, text: str) -> Sentiment:
        return self.score_batch([text])[0]

    def score_batch(self, texts: Sequence[str]) -> list[Sentiment]:
        raise NotImplementedError


@dataclass(frozen=True)
class LinearHead:
    """Multinomial logistic regression over L2-normalised sentence embeddings.

    ``coef`` is (3, dim) for the classes negative, neutral, positive. The score is
    P(positive) - P(negative); |score| < ``neutral_band`` is neutral. ``adapter`` is the encoder
    adapter the head was trained with (a file named in the JSON, next to it), or None.
    """

    coef: FloatArray
    intercept: FloatArray
    neutral_band: float
    meta: dict[str, object]
    adapter: Path | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> LinearHead:
        path = path or DEFAULT_HEAD_PATH
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SentimentError(f"cannot read sentiment head {path}: {exc}") from exc
        if list(data.get("labels", [])) != list(LABELS):
            raise SentimentError(f"{path}: labels must be {list(LABELS)}")
        coef = np.asarray(data["coef"], dtype=np.float32)
        intercept = np.asarray(data["intercept"], dtype=np.float32)
        if coef.ndim != 2 or coef.shape[0] != 3 or intercept.shape != (3,):
            raise SentimentError(f"{path}: coef must be (3, dim) and intercept (3,)")
        meta = {k: v for k, v in data.items() if k not in ("coef", "intercept")}
        adapter = path.parent / str(data["adapter"]) if data.get("adapter") else None
        if adapter is not None and not adapter.is_file():
            raise SentimentError(f"{path}: its encoder adapter {adapter} is missing")
        return cls(coef, intercept, float(data["neutral_band"]), meta, adapter)

    @property
    def dim(self) -> int:
        return int(self.coef.shape[1])

    def probabilities(self, embeddings: FloatArray) -> FloatArray:
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        x = embeddings / np.maximum(norms, 1e-12)
        logits = x @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        probs: FloatArray = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        return probs


def sentiments_from_probs(probs: FloatArray, engine: str, band: float) -> list[Sentiment]:
    """(n, 3) class probabilities (negative, neutral, positive) to Sentiment records."""
    out: list[Sentiment] = []
    for p_neg, p_neu, p_pos in probs.tolist():
        score = max(-1.0, min(1.0, p_pos - p_neg))
        label = label_for(score, band)
        confidence = {"negative": p_neg, "neutral": p_neu, "positive": p_pos}[label]
        if label == "neutral":
            # Inside the band the model may still prefer a polar class: confidence is how far
            # from the band edge the score sits, never above the neutral probability's support.
            confidence = max(p_neu, 1.0 - abs(score) / band if band > 0 else 0.0)
        if not math.isfinite(confidence):
            confidence = 0.0
        out.append(
            Sentiment(
                score=round(score, 4),
                label=label,
                confidence=round(min(1.0, max(0.0, confidence)), 4),
                engine=engine,
            )
        )
    return out


def mean_pool(hidden: FloatArray, mask: npt.NDArray[np.int64]) -> FloatArray:
    """Mean of token vectors over the attention mask (sentence-transformers pooling)."""
    m = mask[:, :, None].astype(np.float32)
    pooled: FloatArray = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return pooled
