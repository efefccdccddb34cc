"""Experimental variants of the Whisper engine, for bench/asr_experiments.py.

They subclass the worker's engine classes (nothing of analytics/ is edited): decoding options
(temperature fallback, no-speech and log-prob thresholds), a per-call prompt (bias phrases and
the call's previous text) and a per-call signal front end (streaming resampler, gain, EQ),
installed by patching ``CallSession._segment``. What wins moves into the engine.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import lfilter

from analytics.asr import service as transcription
from analytics.asr.audio import FloatAudio, pcm16_to_float, resample
from analytics.asr.base import Hypothesis, RecognizerStream
from analytics.asr.frontend import Agc, StreamResampler
from analytics.asr.vad import RATE_HZ, SpeechSegment
from analytics.asr.whisper import WhisperConfig, WhisperRecognizer, WhisperStream, _Decoder


@dataclass(frozen=True)
class DecodeOptions:
    temperatures: tuple[float, ...] = (0.0,)
    best_of: int = 5
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float | None = None
    no_speech_threshold: float | None = None
    condition_on_previous: bool = False
    bias_text: str = ""
    max_prompt_tokens: int = 223 // 2
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    patience: float = 1.0
    length_penalty: float = 1.0


def compression_ratio(text: str) -> float:
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


class VariantDecoder(_Decoder):
    options: DecodeOptions = DecodeOptions()
    fallbacks = 0
    dropped = 0

    def decode_with(
        self, audios: Sequence[FloatAudio], prompts: Sequence[list[int]]
    ) -> list[tuple[str, float]]:
        import ctranslate2  # noqa: PLC0415

        opts = self.options
        frames = max(self.window_frames(a) for a in audios)
        batch = np.stack([self.features(a, frames) for a in audios])
        durations = [a.shape[0] / RATE_HZ for a in audios]
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=True)
        enc = np.asarray(encoded)
        out: list[tuple[str, float] | None] = [None] * len(audios)
        todo = list(range(len(audios)))
        for t_i, temperature in enumerate(opts.temperatures):
            if not todo:
                break
            sub = ctranslate2.StorageView.from_array(np.ascontiguousarray(enc[todo]))
            max_len = min(
                448,
                max(len(prompts[i]) for i in todo) + 10 + int(max(durations[i] for i in todo) * 10),
            )
            kwargs: dict[str, Any] = {}
            if temperature > 0:
                ctranslate2.set_random_seed(1234)
                kwargs = {
                    "beam_size": 1,
                    "num_hypotheses": opts.best_of,
                    "sampling_topk": 0,
                    "sampling_temperature": temperature,
                }
            else:
                kwargs = {"beam_size": self.config.beam_size, "patience": opts.patience}
            results = self.model.model.generate(
                sub,
                [prompts[i] for i in todo],
                max_length=max_len,
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=True,
                suppress_tokens=self.suppress,
                repetition_penalty=opts.repetition_penalty,
                no_repeat_ngram_size=opts.no_repeat_ngram_size,
                length_penalty=opts.length_penalty,
                **kwargs,
            )
            still: list[int] = []
            last = t_i == len(opts.temperatures) - 1
            for i, result in zip(todo, results, strict=True):
                best = max(range(len(result.sequences_ids)), key=lambda k: result.scores[k])
                ids = result.sequences_ids[best]
                tokens = self._text_tokens(ids, durations[i])
                text = self.tokenizer.decode(tokens).strip()
                score = float(result.scores[best])
                avg_logprob = score * (len(ids) ** opts.length_penalty) / (len(ids) + 1)
                silent = (
                    opts.no_speech_threshold is not None
                    and result.no_speech_prob > opts.no_speech_threshold
                    and (opts.log_prob_threshold is None or avg_logprob < opts.log_prob_threshold)
                )
                if silent:
                    VariantDecoder.dropped += 1
                    out[i] = ("", 0.0)
                    continue
                failed = compression_ratio(text) > opts.compression_ratio_threshold or (
                    opts.log_prob_threshold is not None and avg_logprob < opts.log_prob_threshold
                )
                if failed and not last:
                    VariantDecoder.fallbacks += 1
                    still.append(i)
                    continue
                out[i] = (text, float(min(1.0, math.exp(score))))
            todo = still
        return [o if o is not None else ("", 0.0) for o in out]


class VariantStream(WhisperStream):
    def __init__(self, recognizer: WhisperRecognizer, language: str | None = None) -> None:
        super().__init__(recognizer, language)
        self.previous: list[int] = []


class VariantRecognizer(WhisperRecognizer):
    """WhisperRecognizer with per-call prompts and the decode options of ``options``."""

    def __init__(self, config: WhisperConfig, options: DecodeOptions) -> None:
        super().__init__(config)
        self.options = options

    def decoder(self) -> _Decoder:
        decoder: _Decoder | None = getattr(self._local, "decoder", None)
        if decoder is None:
            decoder = VariantDecoder(self.config, self.model_path)
            decoder.options = self.options  # type: ignore[attr-defined]
            self._local.decoder = decoder
            self._bias = (
                decoder.tokenizer.encode(" " + self.options.bias_text.strip())
                if self.options.bias_text.strip()
                else []
            )
        return decoder

    def open_stream(self, language: str | None = None) -> RecognizerStream:
        return VariantStream(self, language)

    def prompt_for(self, decoder: _Decoder, stream: RecognizerStream) -> list[int]:
        previous = stream.previous if isinstance(stream, VariantStream) else []
        bias: list[int] = self._bias
        prompt = decoder.prompt(decoder.config.language)
        if not bias and not previous:
            return prompt
        limit = self.options.max_prompt_tokens
        context = [*bias[:limit], *previous][-limit:] if previous else bias[:limit]
        return [decoder.tokenizer.sot_prev, *context, *prompt]

    def finish_batch(
        self, items: Sequence[tuple[RecognizerStream, SpeechSegment]]
    ) -> list[Hypothesis]:
        if not items:
            return []
        decoder = self.decoder()
        assert isinstance(decoder, VariantDecoder)
        prompts = [self.prompt_for(decoder, stream) for stream, _ in items]
        decoded = decoder.decode_with([u.audio for _, u in items], prompts)
        hypotheses: list[Hypothesis] = []
        for (stream, utterance), (text, confidence) in zip(items, decoded, strict=True):
            if isinstance(stream, WhisperStream):
                stream.reset()
            if isinstance(stream, VariantStream) and self.options.condition_on_previous and text:
                stream.previous = [*stream.previous, *decoder.tokenizer.encode(" " + text)][
                    -self.options.max_prompt_tokens :
                ]
            hypotheses.append(
                Hypothesis(text, True, utterance.start_ms, utterance.end_ms, confidence)
            )
        return hypotheses


# --- the per-call front end ------------------------------------------------------------------


@dataclass(frozen=True)
class FrontEndOptions:
    resampler: str = "frame"  # frame (today: resample_poly per frame) | stream
    agc: bool = False
    agc_target_dbfs: float = -6.0
    agc_max_gain_db: float = 30.0
    pre_emphasis: float = 0.0  # y[n] = x[n] - a x[n-1] at 16 kHz
    gain_db: float = 0.0  # a fixed gain


class FrontEnd:
    def __init__(self, rate_hz: int, options: FrontEndOptions) -> None:
        self.options = options
        self.rate_hz = rate_hz
        self.resampler = (
            StreamResampler(rate_hz, RATE_HZ) if options.resampler == "stream" else None
        )
        self.agc = (
            Agc(target_dbfs=options.agc_target_dbfs, max_gain_db=options.agc_max_gain_db)
            if options.agc
            else None
        )
        self._zi = np.zeros(1)

    def __call__(self, audio: FloatAudio) -> FloatAudio:
        if self.resampler is not None:
            audio = self.resampler.process(audio)
        elif self.rate_hz != RATE_HZ:
            audio = resample(audio, self.rate_hz, RATE_HZ)
        if self.options.gain_db:
            audio = np.clip(audio * np.float32(10 ** (self.options.gain_db / 20)), -1, 1)
        if self.options.pre_emphasis:
            a = self.options.pre_emphasis
            y, self._zi = lfilter([1.0, -a], [1.0], audio.astype(np.float64), zi=self._zi)
            audio = np.asarray(y, dtype=np.float32)
        if self.agc is not None:
            audio = self.agc.process(audio)
        return np.asarray(audio, dtype=np.float32)


def install_front_end(options: FrontEndOptions | None) -> Callable[[], None]:
    """Patch CallSession._segment to condition each call's audio; returns the undo."""
    original = transcription.CallTranscriber._segment
    if options is None or options == FrontEndOptions():
        return lambda: None

    def _segment(self: Any, pcm: bytes, rate_hz: int) -> Any:
        fe = getattr(self, "_front_end", None)
        if fe is None:
            fe = FrontEnd(rate_hz, options)
            self._front_end = fe
        return self.segmenter.feed(fe(pcm16_to_float(pcm)))

    transcription.CallTranscriber._segment = _segment  # type: ignore[method-assign]

    def undo() -> None:
        transcription.CallTranscriber._segment = original  # type: ignore[method-assign]

    return undo


# --- the VAD model ---------------------------------------------------------------------------


def silero_package_model() -> str:
    """silero_vad.onnx of the ``silero-vad`` package (v6.2, 8 and 16 kHz), not imported (torch)."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        raise RuntimeError("pip install --no-deps silero-vad")
    return str(Path(spec.origin).parent / "data" / "silero_vad.onnx")


class SileroVad62:
    """The silero-vad package's model behind SileroVad's interface (16 kHz, 512-sample windows).

    Its recurrent state is one (2, 1, 128) tensor; it is kept in ``VadState.h`` (``c`` unused).
    """

    def __init__(self, path: str | None = None) -> None:
        import onnxruntime  # noqa: PLC0415

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 4
        self._session: Any = onnxruntime.InferenceSession(
            path or silero_package_model(), providers=["CPUExecutionProvider"], sess_options=opts
        )
        self._sr = np.array(RATE_HZ, dtype=np.int64)

    def probabilities(self, windows: FloatAudio, state: Any) -> np.ndarray[Any, Any]:
        if state.h.shape != (2, 1, 128):
            state.h = np.zeros((2, 1, 128), dtype=np.float32)
        out = np.empty(windows.shape[0], dtype=np.float32)
        previous = state.context
        for i in range(windows.shape[0]):
            x = np.concatenate([previous, windows[i]])[None, :].astype(np.float32)
            p, state.h = self._session.run(None, {"input": x, "state": state.h, "sr": self._sr})
            out[i] = float(p[0, 0])
            previous = windows[i, -64:]
        state.context = np.array(previous, dtype=np.float32)
        return out

    def probabilities_each(self, window: FloatAudio, states: Any) -> np.ndarray[Any, Any]:
        """One window through each state (the segmenter scores with two, see vad.py)."""
        return np.array([self.probabilities(window[None, :], s)[0] for s in states], np.float32)
