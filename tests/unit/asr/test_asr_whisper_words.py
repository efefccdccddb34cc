"""The real Whisper models: word timings (tiny.en), and the language per call (whisper base).

Word timings are checked against where the words must be: two recordings in one utterance,
1.5 s of silence between them, so every word of the first ends before the silence and every
word of the second starts after it (within the alignment's 20 ms steps and a little slack).
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analytics.asr.audio import read_audio
from analytics.asr.offline import recognise_audio
from analytics.asr.service import ServiceConfig
from analytics.asr.vad import SileroVad, SpeechSegment
from analytics.asr.whisper import WhisperConfig, WhisperRecognizer, WhisperStream

pytestmark = [pytest.mark.unit, pytest.mark.slow]

SPEECH = Path(__file__).resolve().parents[4] / "shared" / "data" / "speech" / "audio"
FIRST = SPEECH / "arctic_aew_a0003.flac"  # "For the twentieth time that evening ..." 3.5 s
SECOND = SPEECH / "ls-test-clean_1089-134691-0000.flac"  # "He could wait no longer" 2.1 s
SLACK_MS = 300


def audio(path: Path) -> np.ndarray[Any, Any]:
    return read_audio(path, 16000)[0]


def test_tiny_en_word_timings_are_where_the_words_are() -> None:
    a, b = audio(FIRST), audio(SECOND)
    gap = np.zeros(24000, dtype=np.float32)
    joined = np.concatenate([a, gap, b])
    start_ms = 5000
    utterance = SpeechSegment(joined, start_ms, start_ms + joined.shape[0] // 16)
    recognizer = WhisperRecognizer()
    [hyp] = recognizer.finish_batch([(recognizer.open_stream(), utterance)])
    words = hyp.words
    assert hyp.language == "en" and len(words) >= 12, hyp
    assert "".join(w.word for w in words) == hyp.text.replace(" ", "")
    assert all(utterance.start_ms <= w.start_ms <= w.end_ms <= utterance.end_ms for w in words)
    assert all(x.end_ms <= y.start_ms for x, y in pairwise(words))  # monotonic, no overlap
    gap_start = start_ms + a.shape[0] // 16
    gap_end = gap_start + 1500
    hands = next(i for i, w in enumerate(words) if w.word.lower().startswith("hands"))
    assert all(w.end_ms <= gap_start + SLACK_MS for w in words[: hands + 1])
    assert all(w.start_ms >= gap_end - SLACK_MS for w in words[hands + 1 :])
    assert [
        w.word.lower().strip(".") for w in words[hands + 1 :]
    ] == "he could wait no longer".split()


def test_word_timings_through_the_workers_path_and_switched_off() -> None:
    vad = SileroVad()
    recognizer = WhisperRecognizer()  # on by default
    finals = [t for t in recognise_audio(audio(SECOND), 16000, recognizer, vad, ServiceConfig())]
    assert finals and all(t.words for t in finals)
    for t in finals:
        assert all(t.start_ms <= w.start_ms <= w.end_ms <= t.end_ms for w in t.words)
        assert t.language == "en"
    off = WhisperRecognizer(WhisperConfig(word_timestamps=False))
    plain = recognise_audio(audio(SECOND), 16000, off, vad, ServiceConfig())
    assert plain and not any(t.words for t in plain)


@pytest.fixture(scope="module")
def base() -> WhisperRecognizer:
    recognizer = WhisperRecognizer(WhisperConfig(tier="accurate"))
    recognizer.warm_up()
    return recognizer


class _PromptSpy:
    """The CTranslate2 model, recording the prompts ``generate`` gets."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.prompts: list[list[int]] = []

    def generate(self, features: Any, prompts: list[list[int]], **kwargs: Any) -> Any:
        self.prompts.extend(prompts)
        return self.model.generate(features, prompts, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def test_each_calls_language_reaches_its_prompt(base: WhisperRecognizer) -> None:
    decoder = base.decoder()
    spy = _PromptSpy(decoder.model.model)
    decoder.model.model = spy
    try:
        clip = audio(SECOND)
        utterance = SpeechSegment(clip, 0, clip.shape[0] // 16)
        hi, en, default = base.open_stream("hi"), base.open_stream("en"), base.open_stream()
        hyps = base.finish_batch([(hi, utterance), (en, utterance), (default, utterance)])
    finally:
        decoder.model.model = spy.model
    tokenizer = decoder.tokenizer
    hi_token = tokenizer.tokenizer.token_to_id("<|hi|>")
    en_token = tokenizer.tokenizer.token_to_id("<|en|>")
    # one batch, one prompt per utterance: start of transcript, its call's language, transcribe
    assert [p[1] for p in spy.prompts] == [hi_token, en_token, en_token]
    assert spy.prompts[0] == [tokenizer.sot, hi_token, tokenizer.transcribe]
    assert [h.language for h in hyps] == ["hi", "en", "en"]
    assert "wait" in hyps[1].text.lower()


def test_auto_detects_english_and_keeps_it_for_the_call(base: WhisperRecognizer) -> None:
    stream = base.open_stream("auto")
    assert isinstance(stream, WhisperStream)
    clip = audio(FIRST)
    [hyp] = base.finish_batch([(stream, SpeechSegment(clip, 0, clip.shape[0] // 16))])
    assert hyp.language == "en" and "evening" in hyp.text.lower()
    assert stream.detected == "en" and stream.wanted_language() == "en"  # kept for the call
