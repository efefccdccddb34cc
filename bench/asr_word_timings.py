"""What Whisper word timings cost: faster-whisper's ``word_timestamps`` on and off.

Not the worker's path (its decoder has no alignment step yet): stock ``WhisperModel.transcribe``
(30 s window, beam 1, no previous-text conditioning) on corpus tiers A+B through the telephone
channel, per model tier. Prints decode CPU time with and without word timings.

    .venv/bin/python bench/asr_word_timings.py
"""

from __future__ import annotations

import csv
import time

from asr_harness import CORPUS
from faster_whisper import WhisperModel

from agentstream.sim.channel import apply_channel
from analytics.asr.audio import read_audio, resample
from analytics.asr.models import TIERS, tier_model_path


def main() -> None:
    rows = [r for r in csv.DictReader(CORPUS.open(), delimiter="\t") if r["tier"] in "AB"]
    audios = []
    for row in rows:
        audio, rate = read_audio(CORPUS.parent / row["file"])
        tel, tel_rate = apply_channel(audio, rate, "telephone")
        audios.append(resample(tel, tel_rate, 16000))
    seconds = sum(a.shape[0] for a in audios) / 16000
    for tier in TIERS:
        model = WhisperModel(
            str(tier_model_path(tier)),
            device="cpu",
            compute_type="int8",
            cpu_threads=1,
            local_files_only=True,
        )
        for words in (False, True):
            c0 = time.process_time()
            n = 0
            for audio in audios:
                segments, _ = model.transcribe(
                    audio,
                    language="en",
                    beam_size=1,
                    word_timestamps=words,
                    condition_on_previous_text=False,
                    without_timestamps=not words,
                )
                n += sum(len(s.words or []) for s in segments)
            cpu = time.process_time() - c0
            print(
                f"{tier} word_timestamps={words}: CPU {cpu:.1f} s for {seconds:.0f} s audio, "
                f"RTF {cpu / seconds:.3f}, {1000 * cpu / len(audios):.0f} ms/utt, {n} words",
                flush=True,
            )


if __name__ == "__main__":
    main()
