"""What Whisper word timings cost on the worker's decoder path, per model tier.

Corpus tiers A+B go once per model tier through the channel (telephone by default) and the
worker's streaming path (asr_harness.StreamPath: front end, VAD, speculative decode), which
records every utterance the worker hands its recogniser. Each of those utterances is then
decoded again by the worker's recogniser (``finish_batch``, one utterance at a time as in the WER
runs) with ``whisper_word_timestamps`` off and on, alternately, so both see the same machine
load. Cost is CPU time (``time.process_time``) around ``finish_batch``; it also reports how many
words came out and whether they spell the text.

    .venv/bin/python bench/asr_word_timings.py
    .venv/bin/python bench/asr_word_timings.py --model-tiers fast --channel plain --repeat 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import cast

from asr_harness import CORPUS, StreamPath, TimedRecognizer, channel_audio, corpus_rows

from agentstream.sim.channel import CHANNELS, Channel
from analytics.asr.base import Hypothesis, Recognizer, RecognizerStream
from analytics.asr.models import TIERS, Tier
from analytics.asr.vad import SileroVad, SpeechSegment
from analytics.asr.whisper import WhisperConfig, WhisperRecognizer
from analytics.settings import WorkerSettings
from analytics.worker import service_config


class Recording(TimedRecognizer):
    """Keeps every utterance the worker's path asks to decode."""

    def __init__(self, inner: Recognizer) -> None:
        super().__init__(inner)
        self.seen: list[SpeechSegment] = []

    def finish_batch(
        self, items: Sequence[tuple[RecognizerStream, SpeechSegment]]
    ) -> list[Hypothesis]:
        self.seen.extend(u for _, u in items)
        return super().finish_batch(items)


async def worker_utterances(
    settings: WorkerSettings, rows: list[dict[str, str]], channel: Channel
) -> list[SpeechSegment]:
    recognizer = Recording(WhisperRecognizer(WhisperConfig.from_settings(settings)))
    path = StreamPath(recognizer, service_config(settings), SileroVad(model=settings.vad_model))
    await path.start()
    try:
        for row in rows:
            audio, rate = channel_audio(CORPUS.parent / row["file"], channel)
            await path.call(audio, rate, call_sid=Path(row["file"]).stem)
    finally:
        await path.stop()
    return recognizer.seen


def spelled(hyp: Hypothesis) -> bool:
    """The words, joined, are the text (spaces aside)."""
    return "".join(w.word for w in hyp.words) == hyp.text.replace(" ", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiers", default="A,B", help="comma-separated corpus tiers")
    parser.add_argument("--channel", default="telephone", help=f"one of {', '.join(CHANNELS)}")
    parser.add_argument("--model-tiers", default=",".join(TIERS))
    parser.add_argument("--repeat", type=int, default=1, help="decodes of each utterance per mode")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = corpus_rows(CORPUS, [t for t in args.tiers.split(",") if t])
    channel = cast(Channel, args.channel)
    print(f"{len(rows)} recordings, corpus tiers {args.tiers}, channel {channel}")
    print("| tier | decodes | audio s | without: RTF, ms/decode | with: RTF, ms/decode | extra |")
    print("|---|---|---|---|---|---|")
    for tier in [cast(Tier, t) for t in args.model_tiers.split(",") if t]:
        settings = WorkerSettings(whisper_tier=tier)
        utterances = asyncio.run(worker_utterances(settings, rows, channel))
        audio_s = sum(u.audio.shape[0] for u in utterances) / 16_000
        config = WhisperConfig.from_settings(settings)
        modes = {w: WhisperRecognizer(replace(config, word_timestamps=w)) for w in (False, True)}
        for recognizer in modes.values():
            recognizer.warm_up()
        cpu = {False: 0.0, True: 0.0}
        words_out, good, texts = 0, 0, 0
        for _ in range(args.repeat):
            for utterance in utterances:
                for words, recognizer in modes.items():
                    c0 = time.process_time()
                    [hyp] = recognizer.finish_batch([(recognizer.open_stream(), utterance)])
                    cpu[words] += time.process_time() - c0
                    if words and hyp.text:
                        words_out += len(hyp.words)
                        good += spelled(hyp)
                        texts += 1
        n = len(utterances) * args.repeat
        off, on = cpu[False], cpu[True]
        print(
            f"| {tier} | {len(utterances)} | {audio_s:.0f} "
            f"| {off / audio_s / args.repeat:.3f}, {1000 * off / n:.0f} "
            f"| {on / audio_s / args.repeat:.3f}, {1000 * on / n:.0f} "
            f"| +{100 * (on - off) / off:.0f} % ({1000 * (on - off) / n:.0f} ms) |",
            flush=True,
        )
        print(f"  {words_out} words; words spell the text in {good}/{texts} decodes")


if __name__ == "__main__":
    main()
