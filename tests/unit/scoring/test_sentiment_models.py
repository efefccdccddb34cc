"""The sentiment engines with the real models on real call-centre sentences (slow: loads models)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from analytics.scoring.batcher import MicroBatcher
from analytics.scoring.engines import build_scorer
from analytics.scoring.minilm import (
    TransformersScorer,
    default_minilm_path,
    is_sequence_classifier,
    merge_adapter,
)
from analytics.scoring.sentiment import (
    DEFAULT_FINETUNED_HEAD_PATH,
    DEFAULT_HEAD_PATH,
    LinearHead,
    SentimentError,
    SentimentScorer,
    label_for,
)
from analytics.scoring.settings import ScoringSettings
from schemas.records import Sentiment
from tests.data import call_centre_sentiment

pytestmark = pytest.mark.unit

NEGATIVE = [
    "This is the third time I am calling and nobody has fixed my problem.",
    "You people have charged me twice and I am really angry about it.",
    "Your service is terrible, I want to close my account.",
    "I have been waiting for forty minutes, this is unacceptable.",
    "Stop calling me, I already paid the full amount last week!",
]
POSITIVE = [
    "Thank you so much, that was really helpful.",
    "Great, the issue is resolved now, I appreciate your help.",
    "Perfect, you have been very kind and patient with me.",
    "Wonderful, the refund arrived this morning, thanks a lot.",
]


@pytest.fixture(scope="module")
def onnx_scorer() -> SentimentScorer:
    return build_scorer(ScoringSettings(engine="onnx"))


@pytest.fixture(scope="module")
def torch_scorer() -> SentimentScorer:
    return build_scorer(ScoringSettings(engine="transformers"))


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["transformers", "onnx"])
def test_model_engines_on_call_centre_sentences(
    engine: str, onnx_scorer: SentimentScorer, torch_scorer: SentimentScorer
) -> None:
    scorer = torch_scorer if engine == "transformers" else onnx_scorer
    results = scorer.score_batch(NEGATIVE + POSITIVE)
    assert [r.label for r in results[: len(NEGATIVE)]] == ["negative"] * len(NEGATIVE)
    assert [r.label for r in results[len(NEGATIVE) :]] == ["positive"] * len(POSITIVE)
    for r in results:
        assert -1.0 <= r.score <= 1.0 and 0.0 <= r.confidence <= 1.0
        assert r.engine == engine
    # one at a time gives the same as the batch (padding does not change the result)
    single = scorer.score(NEGATIVE[0])
    assert single.score == pytest.approx(results[0].score, abs=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["transformers", "onnx"])
def test_model_engines_on_the_call_centre_set(
    engine: str, onnx_scorer: SentimentScorer, torch_scorer: SentimentScorer
) -> None:
    """40 hand-written caller utterances, a third of them neutral: the product's own domain.

    The default head gets 39/40 here and VADER 30/40; 36/40 is the floor a new head must keep.
    """
    rows = call_centre_sentiment()
    assert len(rows) == 40 and {label for label, _ in rows} == {"negative", "neutral", "positive"}
    scorer = torch_scorer if engine == "transformers" else onnx_scorer
    results = scorer.score_batch([text for _, text in rows])
    correct = sum(r.label == label for r, (label, _) in zip(results, rows, strict=True))
    assert correct >= 36, f"{engine}: {correct}/40"
    vader = build_scorer(ScoringSettings(engine="vader")).score_batch([t for _, t in rows])
    assert correct > sum(r.label == label for r, (label, _) in zip(vader, rows, strict=True))


@pytest.mark.slow
def test_onnx_agrees_with_transformers_on_the_plain_head(onnx_scorer: SentimentScorer) -> None:
    """The int8 ONNX encoder matches the float32 one: same head, nearly the same scores."""
    plain = build_scorer(ScoringSettings(engine="transformers", head_path=DEFAULT_HEAD_PATH))
    texts = [*NEGATIVE, *POSITIVE, "I would like to know my account balance.", "okay"]
    a = plain.score_batch(texts)
    b = onnx_scorer.score_batch(texts)
    for x, y in zip(a, b, strict=True):
        assert abs(x.score - y.score) < 0.15


@pytest.mark.slow
def test_the_adapter_changes_the_encoder(torch_scorer: SentimentScorer) -> None:
    """The default transformers engine runs the fine-tuned encoder, not the plain one."""
    assert isinstance(torch_scorer, TransformersScorer)
    assert torch_scorer.head.adapter is not None
    plain = TransformersScorer(head_path=DEFAULT_HEAD_PATH)
    assert plain.head.adapter is None
    text = ["I have been waiting for forty minutes, this is unacceptable."]
    tuned, base = torch_scorer.embed(text)[0], plain.embed(text)[0]
    cosine = float(tuned @ base / (np.linalg.norm(tuned) * np.linalg.norm(base)))
    assert 0.3 < cosine < 0.9999


@pytest.mark.slow
def test_torchscript_encoder_gives_the_eager_results(torch_scorer: SentimentScorer) -> None:
    """The traced encoder (the default) equals the eager one, padded batches included."""
    assert isinstance(torch_scorer, TransformersScorer)
    assert torch_scorer._traced is not None
    eager = TransformersScorer(jit=False)
    assert eager._traced is None
    texts = [text for _, text in call_centre_sentiment()]
    np.testing.assert_allclose(torch_scorer.embed(texts), eager.embed(texts), atol=1e-4)
    single = np.vstack([torch_scorer.embed([t]) for t in texts[:5]])
    np.testing.assert_allclose(single, eager.embed(texts[:5]), atol=1e-4)


@pytest.mark.slow
def test_onnx_refuses_a_head_that_needs_an_adapter() -> None:
    with pytest.raises(SentimentError, match="adapter"):
        build_scorer(ScoringSettings(engine="onnx", head_path=DEFAULT_FINETUNED_HEAD_PATH))


def test_merge_adapter_adds_the_low_rank_update(tmp_path: Path) -> None:
    import torch
    from safetensors.numpy import save_file

    model = torch.nn.Sequential(torch.nn.Linear(4, 3, bias=False))
    before = model[0].weight.detach().clone().numpy()
    a = np.arange(8, dtype=np.float32).reshape(2, 4) / 10
    b = np.ones((3, 2), dtype=np.float32)
    save_file({"0.A": a, "0.B": b}, str(tmp_path / "ad.safetensors"), metadata={"scale": "2.0"})
    assert merge_adapter(torch, model, tmp_path / "ad.safetensors") == 1
    np.testing.assert_allclose(model[0].weight.detach().numpy(), before + 2.0 * b @ a, rtol=1e-6)
    save_file({"0.A": a.T.copy(), "0.B": b}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(SentimentError):
        merge_adapter(torch, model, tmp_path / "bad.safetensors")
    save_file({"9.A": a, "9.B": b}, str(tmp_path / "other.safetensors"))
    with pytest.raises(SentimentError, match="does not fit"):
        merge_adapter(torch, model, tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(SentimentError, match="cannot read"):
        merge_adapter(torch, model, tmp_path / "junk.safetensors")


def test_a_head_naming_a_missing_adapter_is_an_error(tmp_path: Path) -> None:
    data = json.loads(DEFAULT_FINETUNED_HEAD_PATH.read_text(encoding="utf-8"))
    data["adapter"] = "missing.safetensors"
    (tmp_path / "head.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(SentimentError, match="missing"):
        LinearHead.load(tmp_path / "head.json")


@pytest.mark.slow
def test_vader_engine() -> None:
    scorer = build_scorer(ScoringSettings(engine="vader"))
    assert scorer.score("This is terrible and I hate it").label == "negative"
    assert scorer.score("Thank you, that is great").label == "positive"
    assert scorer.score("The office opens at nine").label == "neutral"


@pytest.mark.slow
def test_user_sequence_classifier_directory(tmp_path: Path) -> None:
    """A fine-tuned classifier directory is detected from its config and used as is."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        id2label={0: "NEGATIVE", 1: "NEUTRAL", 2: "POSITIVE"},
        label2id={"NEGATIVE": 0, "NEUTRAL": 1, "POSITIVE": 2},
    )
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(default_minilm_path() / name, tmp_path / name)
    assert is_sequence_classifier(tmp_path)
    assert not is_sequence_classifier(default_minilm_path())
    scorer = build_scorer(ScoringSettings(engine="transformers", model_path=tmp_path))
    assert scorer.engine == "transformers-classifier"
    out = scorer.score_batch(["hello", "this is bad"])
    assert len(out) == 2 and all(-1 <= s.score <= 1 for s in out)


@pytest.mark.parametrize("path", [DEFAULT_HEAD_PATH, DEFAULT_FINETUNED_HEAD_PATH])
def test_head_files_are_small_json_with_calibrated_band(path: Path) -> None:
    head = LinearHead.load(path)
    assert head.dim == 384
    assert 0.0 < head.neutral_band < 1.0
    assert head.meta["labels"] == ["negative", "neutral", "positive"]
    assert path.stat().st_size < 20_000
    if head.adapter is not None:
        assert head.adapter.stat().st_size < 2_000_000


def test_label_for() -> None:
    assert label_for(-0.3, 0.3) == "negative"
    assert label_for(0.29, 0.3) == "neutral"
    assert label_for(0.3, 0.3) == "positive"


class CountingScorer(SentimentScorer):
    engine = "fake"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def score_batch(self, texts: Sequence[str]) -> list[Sentiment]:
        self.batches.append(len(texts))
        return [
            Sentiment(score=-0.5 if "bad" in t else 0.5, label="neutral", confidence=1.0)
            for t in texts
        ]


async def test_micro_batcher_groups_concurrent_requests() -> None:
    fake = CountingScorer()
    batcher = MicroBatcher(fake, max_wait_ms=20, max_size=8)
    try:
        texts = [f"text {i} {'bad' if i % 2 else 'good'}" for i in range(20)]
        results = await asyncio.gather(*(batcher.score(t) for t in texts))
        assert [r.score for r in results] == [-0.5 if i % 2 else 0.5 for i in range(20)]
        assert fake.batches == [8, 8, 4]
        # a lone request waits at most about max_wait_ms
        started = time.monotonic()
        await batcher.score("alone")
        assert time.monotonic() - started < 0.5
        assert fake.batches[-1] == 1
    finally:
        batcher.close()


async def test_micro_batcher_propagates_model_errors() -> None:
    class Broken(SentimentScorer):
        def score_batch(self, texts: Sequence[str]) -> list[Sentiment]:
            raise RuntimeError("model exploded")

    batcher = MicroBatcher(Broken(), max_wait_ms=1)
    try:
        with pytest.raises(RuntimeError, match="exploded"):
            await batcher.score("x")
    finally:
        batcher.close()


def test_blended_scorer_mixes_model_and_vader() -> None:
    from analytics.scoring.engines import BlendedScorer

    blended = BlendedScorer(CountingScorer(), weight=0.5, band=0.1)
    (out,) = blended.score_batch(["good, great, wonderful"])
    vader = build_scorer(ScoringSettings(engine="vader")).score("good, great, wonderful").score
    assert out.score == pytest.approx(0.5 * 0.5 + 0.5 * vader, abs=1e-3)
    assert out.label == "positive" and out.engine == "fake+vader"
