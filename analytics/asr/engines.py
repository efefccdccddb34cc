"""The recogniser factory: picks the configured backend, beside the implementations.

The interface (:mod:`analytics.asr.base`) imports no backend; this module imports them all (their
heavy libraries load lazily, when a model is first used).
"""

from __future__ import annotations

from analytics.asr.base import Recognizer
from analytics.asr.vosk import VoskRecognizer
from analytics.asr.whisper import WhisperConfig, WhisperRecognizer
from analytics.settings import WorkerSettings

__all__ = ["load_recognizer"]


def load_recognizer(settings: WorkerSettings) -> Recognizer:
    """The configured backend (models load lazily per executor thread / once per process)."""
    if settings.asr_engine == "vosk":
        return VoskRecognizer(
            settings.vosk_model_path, partials=settings.vosk_partials, words=settings.vosk_words
        )
    return WhisperRecognizer(WhisperConfig.from_settings(settings))
