"""The sentiment engines factory (:func:`build_scorer`) beside the implementations: VADER and the
blend here, the MiniLM engines in :mod:`analytics.scoring.minilm`.

The interface (:mod:`analytics.scoring.sentiment`) imports none of them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from analytics.scoring import minilm
from analytics.scoring.sentiment import (
    SentimentError,
    SentimentScorer,
    label_for,
)
from analytics.scoring.settings import ScoringSettings
from schemas.records import Sentiment

logger = logging.getLogger(__name__)
VADER_BAND = 0.05  # the VADER paper's neutral thresholds on the compound score


# Linear layers of each BERT layer that a sentiment adapter (scripts/finetune_sentiment.py) updates
class VaderScorer(SentimentScorer):
    """VADER (``vaderSentiment``): rule-based, microseconds per utterance."""

    engine = "vader"

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def score_batch(self, texts: Sequence[str]) -> list[Sentiment]:
        out = []
        for text in texts:
            polarity = self._analyzer.polarity_scores(text)
            compound = float(polarity["compound"])
            label = label_for(compound, VADER_BAND)
            confidence = {"negative": polarity["neg"], "neutral": polarity["neu"]}.get(
                label, polarity["pos"]
            )
            out.append(
                Sentiment(
                    score=max(-1.0, min(1.0, compound)),
                    label=label,
                    confidence=float(min(1.0, max(0.0, confidence))),
                    engine=self.engine,
                )
            )
        return out


class BlendedScorer(SentimentScorer):
    """A model engine's score blended with VADER's compound: ``(1 - w) * model + w * vader``.

    Opt-in (``vader_weight`` > 0). The label uses the model's neutral band on the blended score;
    the confidence is the model's. VADER adds ~0.1 ms per utterance.
    """

    def __init__(self, inner: SentimentScorer, weight: float, band: float) -> None:
        self.inner = inner
        self.vader = VaderScorer()
        self.weight = weight
        self.band = band
        self.engine = f"{inner.engine}+vader"

    def score_batch(self, texts: Sequence[str]) -> list[Sentiment]:
        model = self.inner.score_batch(texts)
        lexical = self.vader.score_batch(texts)
        out = []
        for m, v in zip(model, lexical, strict=True):
            score = max(-1.0, min(1.0, (1 - self.weight) * m.score + self.weight * v.score))
            out.append(
                Sentiment(
                    score=round(score, 4),
                    label=label_for(score, self.band),
                    confidence=m.confidence,
                    engine=self.engine,
                )
            )
        return out


def build_scorer(settings: ScoringSettings, engine: str | None = None) -> SentimentScorer:
    """The configured engine (``engine`` overrides ``settings.engine``), loaded from local files."""
    name = engine or settings.engine
    scorer = _build_engine(settings, name)
    if name != "vader" and settings.vader_weight > 0:
        band = float(getattr(scorer, "band", 0.05))
        return BlendedScorer(scorer, settings.vader_weight, band)
    return scorer


def _build_engine(settings: ScoringSettings, name: str) -> SentimentScorer:
    if name == "vader":
        return VaderScorer()
    if name == "onnx":
        return minilm.OnnxScorer(
            model_path=settings.onnx_model_path,
            tokenizer_path=settings.tokenizer_path,
            head_path=settings.head_path,
            neutral_band=settings.neutral_band,
            max_seq_len=settings.max_seq_len,
            threads=settings.threads,
        )
    if name == "transformers":
        if settings.model_path is not None and minilm.is_sequence_classifier(settings.model_path):
            return minilm.SequenceClassifierScorer(
                settings.model_path,
                neutral_band=settings.neutral_band,
                max_seq_len=settings.max_seq_len,
                threads=settings.threads,
            )
        return minilm.TransformersScorer(
            model_path=settings.model_path,
            head_path=settings.head_path,
            neutral_band=settings.neutral_band,
            max_seq_len=settings.max_seq_len,
            threads=settings.threads,
            jit=settings.torchscript,
        )
    raise SentimentError(f"unknown sentiment engine {name!r}")
