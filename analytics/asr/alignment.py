"""Word timings for Whisper utterances, from the encoder output the decode already computed.

faster-whisper's method (``WhisperModel.find_alignment`` and ``add_word_timestamps``), on the
worker's batches: CTranslate2's ``align`` runs the decoder once more over each utterance's
decoded text tokens and reads the cross-attention of the model's alignment heads; dynamic time
warping over it gives every token a time (50 per second of audio). The tokenizer groups tokens
into words (on spaces, or per character for languages written without them) and punctuation is
merged into its neighbour. Times are relative to the utterance audio, clamped to it and made
monotonic; the caller adds the utterance's start.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from analytics.asr.base import WordTiming

if TYPE_CHECKING:
    from faster_whisper.tokenizer import Tokenizer

TOKENS_PER_S = 50  # 16 kHz / 160-sample mel hop / encoder stride 2
MEL_FRAMES_PER_S = 100
# faster-whisper's defaults (``transcribe(prepend_punctuations=..., append_punctuations=...)``)
PREPEND = "\"'“¿([{-"
APPEND = "\"'.。,，!！?？:：”)]}、"
_SENTENCE_ENDS = ".。!！?？"


def take(encoded: Any, indices: Sequence[int], size: int) -> Any:
    """The rows ``indices`` of a batch's encoder output (a ``ctranslate2.StorageView`` on CPU)."""
    if list(indices) == list(range(size)):
        return encoded
    import ctranslate2  # loaded with the model

    rows = np.asarray(encoded)[list(indices)]
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(rows))


def align_words(
    model: Any,
    tokenizer_for: Callable[[str], Tokenizer],
    encoded: Any,
    tokens: Sequence[list[int]],
    languages: Sequence[str],
    durations_s: Sequence[float],
) -> list[tuple[WordTiming, ...]]:
    """Each utterance's words with times in ms from its start (empty when it has no text).

    ``model`` is the CTranslate2 Whisper model, ``encoded`` the batch's encoder output, and
    ``tokens`` each utterance's text tokens (no timestamps). ``align`` takes one prompt per call,
    so utterances are aligned in groups of the same language.
    """
    out: list[tuple[WordTiming, ...]] = [()] * len(tokens)
    groups: dict[str, list[int]] = {}
    for i, (item_tokens, language) in enumerate(zip(tokens, languages, strict=True)):
        if item_tokens:
            groups.setdefault(language, []).append(i)
    for language, indices in groups.items():
        tokenizer = tokenizer_for(language)
        results = model.align(
            take(encoded, indices, len(tokens)),
            list(tokenizer.sot_sequence),
            [tokens[i] for i in indices],
            [max(1, int(durations_s[i] * MEL_FRAMES_PER_S)) for i in indices],
        )
        for i, result in zip(indices, results, strict=True):
            out[i] = words_of(tokenizer, tokens[i], result, durations_s[i])
    return out


def words_of(
    tokenizer: Tokenizer, tokens: list[int], result: Any, duration_s: float
) -> tuple[WordTiming, ...]:
    """One utterance's words from its alignment result (``find_alignment``'s arithmetic)."""
    from faster_whisper.transcribe import merge_punctuations  # loaded with the model

    words, word_tokens = tokenizer.split_to_word_tokens([*tokens, tokenizer.eot])
    if len(word_tokens) <= 1:
        return ()
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    text_indices = np.array([pair[0] for pair in result.alignments])
    time_indices = np.array([pair[1] for pair in result.alignments])
    if text_indices.size == 0:
        return ()
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / TOKENS_PER_S
    if jump_times.shape[0] <= int(boundaries[-1]):
        return ()  # fewer aligned tokens than text tokens: no trustworthy times
    probs = result.text_token_probs
    aligned = [
        {
            "word": word,
            "tokens": word_toks,
            "start": float(jump_times[a]),
            "end": float(jump_times[b]),
            "probability": float(np.mean(probs[a:b])) if b > a else 0.0,
        }
        # zip stops before the end-of-text "word" that closes word_tokens
        for word, word_toks, a, b in zip(
            words, word_tokens, boundaries[:-1], boundaries[1:], strict=False
        )
    ]
    longest = _longest_word_s(aligned)
    for prev, item in zip(aligned, aligned[1:], strict=False):
        # a word at a sentence boundary absorbs the pause: cut it to a plausible length
        if item["end"] - item["start"] > longest:
            if item["word"] in _SENTENCE_ENDS:
                item["end"] = item["start"] + longest
            elif prev["word"] in _SENTENCE_ENDS:
                item["start"] = item["end"] - longest
    merge_punctuations(aligned, PREPEND, APPEND)
    kept = [item for item in aligned if str(item["word"]).strip()]  # "" = merged into another
    if not kept:
        return ()
    # so do the first and last words (the VAD keeps some silence around speech)
    first, last = kept[0], kept[-1]
    first["start"] = max(first["start"], first["end"] - longest)
    last["end"] = min(last["end"], last["start"] + longest)
    limit_ms = int(duration_s * 1000)
    timings: list[WordTiming] = []
    last_ms = 0
    for item in kept:
        start = min(max(round(float(item["start"]) * 1000), last_ms), limit_ms)
        end = min(max(round(float(item["end"]) * 1000), start), limit_ms)
        text = str(item["word"]).strip()
        timings.append(WordTiming(text, start, end, round(float(item["probability"]), 3)))
        last_ms = end
    return tuple(timings)


def _longest_word_s(words: list[dict[str, Any]]) -> float:
    """Twice the median word duration, the median at most 0.7 s (faster-whisper's bound)."""
    durations = [w["end"] - w["start"] for w in words if w["end"] > w["start"]]
    return 2 * min(0.7, float(np.median(durations))) if durations else math.inf
