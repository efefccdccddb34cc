"""Offline transcription of whole files: a separate, synchronous loop over the same parts.

Used by ``agentstream transcribe`` and the WER benchmark. It is not the worker's path
(:mod:`analytics.asr.service`, asynchronous, per-call tasks, speculative and cross-call batched
decoding): it reuses the same Segmenter (VAD), recogniser and Transcript conversion in its own
loop. The file is (optionally) resampled to the telephone rate, cut into 100 ms PCM16 frames as
Exotel would send them, segmented, and recognised; finals are decoded in batches at the end.
The result approximates the Transcript records the worker would publish.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analytics.asr.audio import (
    FloatAudio,
    chunks,
    float_to_pcm16,
    pcm16_to_float,
    read_audio,
    resample,
)
from analytics.asr.base import Hypothesis, Recognizer
from analytics.asr.vad import RATE_HZ, Segmenter, SileroVad, SpeechChunk, SpeechSegment, VadConfig
from schemas.records import Transcript

Redact = Callable[[str, str, str], tuple[str, list[str]]]


@dataclass(frozen=True)
class FileResult:
    path: str
    text: str
    transcripts: list[Transcript]
    audio_s: float
    elapsed_s: float


def recognise_audio(
    audio: FloatAudio,
    rate_hz: int,
    recognizer: Recognizer,
    vad: SileroVad | None,
    vad_config: VadConfig,
    frame_ms: int = 100,
) -> list[Hypothesis]:
    """Final (and partial) hypotheses of one recording, frame by frame like a live call."""
    pcm = float_to_pcm16(audio)
    segmenter = Segmenter(vad, vad_config)
    stream = recognizer.open_stream()
    hypotheses: list[Hypothesis] = []
    pending: list[SpeechSegment] = []
    frames = chunks(pcm, rate_hz, frame_ms)
    events: list[SpeechChunk | SpeechSegment] = []
    for frame in frames:
        samples = pcm16_to_float(frame)
        if rate_hz != RATE_HZ:
            samples = resample(samples, rate_hz, RATE_HZ)
        events.extend(
            e for e in segmenter.feed(samples).events if isinstance(e, SpeechChunk | SpeechSegment)
        )
    last = segmenter.flush()
    if last is not None:
        events.append(last)
    for event in events:
        if isinstance(event, SpeechChunk):
            if recognizer.streaming:
                partial = stream.accept(event.audio, event.utterance_start_ms)
                if partial is not None and partial.text:
                    hypotheses.append(partial)
            continue
        if recognizer.streaming:
            final = stream.finish(event)
            if event.keep and final.text:
                hypotheses.append(final)
        elif event.keep:
            pending.append(event)
    for start in range(0, len(pending), max(1, recognizer.max_batch)):
        batch = pending[start : start + recognizer.max_batch]
        for hyp in recognizer.finish_batch([(stream, u) for u in batch]):
            if hyp.text:
                hypotheses.append(hyp)
    stream.close()
    return sorted(hypotheses, key=lambda h: (h.start_ms, h.is_final))


def transcribe_file(
    path: str | Path,
    recognizer: Recognizer,
    vad: SileroVad | None,
    vad_config: VadConfig,
    rate_hz: int | None = None,
    redact: Redact | None = None,
    clock: Callable[[], float] = time.time,
) -> FileResult:
    """Transcribe one WAV/FLAC file (resampled to ``rate_hz`` first when given)."""
    started = time.perf_counter()
    audio, rate = read_audio(path, rate_hz)
    hypotheses = recognise_audio(audio, rate, recognizer, vad, vad_config)
    call_sid = Path(path).stem
    now_ms = int(clock() * 1000)
    transcripts: list[Transcript] = []
    for hyp in hypotheses:
        text, kinds = redact("default", "default", hyp.text) if redact else (hyp.text, [])
        transcripts.append(
            hyp.to_transcript(
                call_sid=call_sid,
                text=text,
                pii_kinds=kinds,
                engine=recognizer.engine,
                speech_end_at_ms=now_ms,
                produced_at_ms=now_ms,
            )
        )
    text = " ".join(t.text for t in transcripts if t.is_final).strip()
    return FileResult(
        str(path),
        text,
        transcripts,
        float(np.asarray(audio).shape[0]) / rate,
        time.perf_counter() - started,
    )
