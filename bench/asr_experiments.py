"""Decoding, VAD, front-end and model-tier variants: WER (plain and telephone), cost, false hits.

Each variant runs the corpus (tiers A+B by default) through the worker's streaming path (see
asr_harness.py) for each channel and appends a row to the JSON results file, so runs can be split
over several processes. Cost is decode CPU time: real-time factor and ms per decoded utterance.
False hits: keyword phrases (every category of the shipped rules file) spotted in the
transcripts but not in the references (what biasing toward those phrases may add).

    .venv/bin/python bench/asr_experiments.py --list
    .venv/bin/python bench/asr_experiments.py --variants baseline,beam5 --channel plain,telephone
    .venv/bin/python bench/asr_experiments.py --table      # print the markdown table of results
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from asr_harness import CORPUS, ROOT, StreamPath, TimedRecognizer, channel_audio, corpus_rows
from asr_variants import (
    DecodeOptions,
    FrontEndOptions,
    SileroVad62,
    VariantDecoder,
    VariantRecognizer,
    install_front_end,
)

from agentstream.sim.channel import Channel
from analytics.asr.models import Tier, tier_model_path
from analytics.asr.vad import SileroVad
from analytics.asr.wer import word_errors
from analytics.asr.whisper import WhisperConfig
from analytics.scoring.keywords import KeywordSpotter
from analytics.settings import WorkerSettings
from analytics.worker import service_config
from schemas.rules import PhraseCategory, default_rules

RESULTS = ROOT / "bench" / "results" / "asr_experiments.json"

RULES_PHRASES = sorted(
    {
        p
        for rs in [default_rules().default, *default_rules().tenants.values()]
        for c in rs.categories.values()
        for p in c.phrases
    }
)


@dataclass(frozen=True)
class Variant:
    description: str
    tier: str = "fast"
    settings: dict[str, Any] = field(default_factory=dict)
    decode: DecodeOptions = DecodeOptions()
    front: FrontEndOptions = FrontEndOptions()
    vad: str = "faster-whisper"  # faster-whisper (silero v6, 16 kHz) | silero-6.2 (package)


FALLBACK = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
BIAS = ", ".join(RULES_PHRASES)
V = Variant
VARIANTS: dict[str, Variant] = {
    "baseline": V("today's default: tiny.en, beam 1, per-frame resampling"),
    "beam5": V("beam 5", settings={"whisper_beam_size": 5}),
    "beam3": V("beam 3", settings={"whisper_beam_size": 3}),
    "fallback": V(
        "temperature fallback 0.2..1.0 (compression > 2.4)",
        decode=DecodeOptions(temperatures=FALLBACK),
    ),
    "fallback-lp": V(
        "fallback, also on avg log-prob < -1",
        decode=DecodeOptions(temperatures=FALLBACK, log_prob_threshold=-1.0),
    ),
    "nospeech": V(
        "drop no-speech > 0.6 with log-prob < -1",
        decode=DecodeOptions(no_speech_threshold=0.6, log_prob_threshold=-1.0),
    ),
    "prev-text": V(
        "prompt with the call's previous text", decode=DecodeOptions(condition_on_previous=True)
    ),
    "bias": V("prompt with the rules' phrases (hotwords)", decode=DecodeOptions(bias_text=BIAS)),
    "pad100": V("VAD pad 100 ms", settings={"vad_speech_pad_ms": 100}),
    "pad300": V("VAD pad 300 ms", settings={"vad_speech_pad_ms": 300}),
    "pad400": V("VAD pad 400 ms", settings={"vad_speech_pad_ms": 400}),
    "floor-90": V("energy gate -90 dBFS", settings={"vad_energy_floor_dbfs": -90.0}),
    "vad-0.35": V("VAD threshold 0.35", settings={"vad_threshold": 0.35}),
    "window30": V("stock 30 s window", settings={"whisper_min_window_s": 30.0}),
    "stream-rs": V("streaming resampler", front=FrontEndOptions(resampler="stream")),
    "agc": V("AGC (peak to -6 dBFS, <= +30 dB)", front=FrontEndOptions(agc=True)),
    "stream-rs+agc": V(
        "streaming resampler + AGC", front=FrontEndOptions(resampler="stream", agc=True)
    ),
    "preemph": V("pre-emphasis 0.97", front=FrontEndOptions(pre_emphasis=0.97)),
    "gain+20": V("fixed +20 dB (diagnostic)", front=FrontEndOptions(gain_db=20.0)),
    "vad62": V("Silero VAD 6.2 (silero-vad package)", vad="silero-6.2"),
    "vad62+agc": V("Silero 6.2 + AGC", vad="silero-6.2", front=FrontEndOptions(agc=True)),
    "vad62+rs": V(
        "Silero 6.2 + streaming resampler",
        vad="silero-6.2",
        front=FrontEndOptions(resampler="stream"),
    ),
    "vad62+rs+agc": V(
        "Silero 6.2 + streaming resampler + AGC",
        vad="silero-6.2",
        front=FrontEndOptions(resampler="stream", agc=True),
    ),
    "best": V(
        "Silero 6.2 + streaming resampler + AGC (= vad62+rs+agc)",
        vad="silero-6.2",
        front=FrontEndOptions(resampler="stream", agc=True),
    ),
    "best+beam5": V(
        "best, beam 5",
        vad="silero-6.2",
        front=FrontEndOptions(resampler="stream", agc=True),
        settings={"whisper_beam_size": 5},
    ),
    "best+pad300": V(
        "best, VAD pad 300 ms",
        vad="silero-6.2",
        front=FrontEndOptions(resampler="stream", agc=True),
        settings={"vad_speech_pad_ms": 300},
    ),
    "best+fallback": V(
        "best, temperature fallback",
        vad="silero-6.2",
        front=FrontEndOptions(resampler="stream", agc=True),
        decode=DecodeOptions(temperatures=FALLBACK),
    ),
    "best+bias": V(
        "best, rules phrases as prompt",
        vad="silero-6.2",
        front=FrontEndOptions(resampler="stream", agc=True),
        decode=DecodeOptions(bias_text=BIAS),
    ),
    "best+agc-12": V(
        "best, AGC target -12 dBFS",
        vad="silero-6.2",
        front=FrontEndOptions(resampler="stream", agc=True, agc_target_dbfs=-12.0),
    ),
    "best-base": V(
        "best front end, whisper base",
        tier="accurate",
        vad="silero-6.2",
        front=FrontEndOptions(resampler="stream", agc=True),
    ),
    "rs+agc-fwvad": V(
        "streaming resampler + AGC -12, faster-whisper's VAD",
        front=FrontEndOptions(resampler="stream", agc=True, agc_target_dbfs=-12.0),
    ),
    "shipped": V("the engine's defaults now (stream resampler, AGC, Silero 6.2)", vad="engine"),
    "shipped+bias": V(
        "the engine's defaults, the rules' phrases as prompt",
        vad="engine",
        decode=DecodeOptions(bias_text=BIAS),
    ),
    "shipped-base": V("the engine's defaults, accurate tier (base)", vad="engine", tier="accurate"),
    "base": V("whisper base (multilingual, en)", tier="accurate"),
    "base-beam5": V("whisper base, beam 5", tier="accurate", settings={"whisper_beam_size": 5}),
}


def recognizer_for(variant: Variant) -> tuple[VariantRecognizer, WorkerSettings]:
    """The variant's recogniser and the worker settings it runs under."""
    # The variants were measured against the engine as it was (per-frame resampling, no AGC,
    # faster-whisper's VAD); their own front end replaces the engine's. ``shipped`` runs the
    # engine's defaults untouched.
    overrides: dict[str, Any] = (
        {} if variant.vad == "engine" else {"resampler": "frame", "agc": False}
    )
    overrides |= variant.settings
    overrides["whisper_model_path"] = tier_model_path(cast(Tier, variant.tier))
    settings = WorkerSettings(**overrides)
    config = WhisperConfig(
        model_path=settings.whisper_model_path,
        compute_type=settings.whisper_compute_type,
        beam_size=settings.whisper_beam_size,
        cpu_threads=settings.whisper_cpu_threads,
        language=settings.whisper_language,
        max_batch=settings.whisper_batch_max,
        min_window_s=settings.whisper_min_window_s,
    )
    return VariantRecognizer(config, variant.decode), settings


def vad_for(variant: Variant) -> Any:
    if variant.vad == "engine":
        return SileroVad()
    return SileroVad62() if variant.vad == "silero-6.2" else SileroVad(model="faster-whisper")


def false_hits(spotter: KeywordSpotter, reference: str, text: str) -> int:
    ref = {h.category for h in spotter.find(reference)}
    return sum(1 for h in spotter.find(text) if h.category not in ref)


async def run_one(
    name: str, variant: Variant, channel: Channel, rows: list[dict[str, str]]
) -> dict[str, Any]:
    inner, settings = recognizer_for(variant)
    recognizer = TimedRecognizer(inner)
    spotter = KeywordSpotter({p: PhraseCategory(phrases=[p]) for p in RULES_PHRASES})
    undo = install_front_end(variant.front)
    path = StreamPath(recognizer, service_config(settings), vad_for(variant))
    VariantDecoder.fallbacks = VariantDecoder.dropped = 0
    acc: dict[str, list[int]] = {}
    audio_s = 0.0
    fh = 0
    texts: dict[str, str] = {}
    t0 = time.perf_counter()
    await path.start()
    try:
        for row in rows:
            audio, rate = channel_audio(CORPUS.parent / row["file"], channel)
            transcripts = await path.call(audio, rate)
            text = " ".join(t.text for t in transcripts).strip()
            texts[row["file"]] = text
            errors, words = word_errors(row["transcript"], text)
            for key in (row["tier"], "all"):
                a = acc.setdefault(key, [0, 0])
                a[0] += errors
                a[1] += words
            audio_s += audio.shape[0] / rate
            fh += false_hits(spotter, row["transcript"], text)
    finally:
        await path.stop()
        undo()
    return {
        "variant": name,
        "description": variant.description,
        "tier": variant.tier,
        "channel": channel,
        "wer": {k: v[0] / v[1] for k, v in acc.items()},
        "errors_words": acc,
        "false_hits": fh,
        "decodes": recognizer.utterances,
        "cpu_rtf": recognizer.cpu_s / audio_s,
        "cpu_ms_per_decode": 1000 * recognizer.cpu_s / max(1, recognizer.utterances),
        "fallbacks": VariantDecoder.fallbacks,
        "dropped": VariantDecoder.dropped,
        "wall_s": round(time.perf_counter() - t0, 1),
        "loadavg": os.getloadavg()[0],
        "decode": asdict(variant.decode) | {"bias_text": bool(variant.decode.bias_text)},
        "front": asdict(variant.front),
        "settings": variant.settings,
        "texts": texts,
    }


def table(results: list[dict[str, Any]]) -> str:
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["variant"], {})[r["channel"]] = r
    lines = [
        "| variant | WER plain A+B | WER telephone A / B / A+B | false hits (tel.) | "
        "CPU RTF (tel.) | CPU ms/decode (tel.) |",
        "|---|---|---|---|---|---|",
    ]
    for name, chans in by.items():
        p, t = chans.get("plain"), chans.get("telephone")
        desc = (p or t or {}).get("description", "")
        pw = f"{p['wer']['all']:.2%}" if p else "-"
        tw = (
            f"{t['wer'].get('A', 0):.2%} / {t['wer'].get('B', 0):.2%} / **{t['wer']['all']:.2%}**"
            if t
            else "-"
        )
        cost = t or p or {}
        lines.append(
            f"| `{name}`: {desc} | {pw} | {tw} | {t['false_hits'] if t else '-'} | "
            f"{cost.get('cpu_rtf', 0):.3f} | {cost.get('cpu_ms_per_decode', 0):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="baseline")
    parser.add_argument("--channel", default="plain,telephone")
    parser.add_argument("--tiers", default="A,B")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.list:
        for name, v in VARIANTS.items():
            print(f"{name:16} {v.description}")
        return
    results: list[dict[str, Any]] = json.loads(args.out.read_text()) if args.out.exists() else []
    if args.table:
        print(table(results))
        return
    rows = corpus_rows(CORPUS, [t for t in args.tiers.split(",") if t])
    for name in [v for v in args.variants.split(",") if v]:
        for channel in [cast(Channel, c) for c in args.channel.split(",") if c]:
            r = asyncio.run(run_one(name, VARIANTS[name], channel, rows))
            print(
                f"{name:16} {channel:10} A {r['wer'].get('A', 0):6.2%} "
                f"B {r['wer'].get('B', 0):6.2%} "
                f"A+B {r['wer']['all']:6.2%} fh {r['false_hits']} rtf {r['cpu_rtf']:.3f} "
                f"ms/dec {r['cpu_ms_per_decode']:.0f} fb {r['fallbacks']} drop {r['dropped']} "
                f"wall {r['wall_s']}s",
                flush=True,
            )
            results = json.loads(args.out.read_text()) if args.out.exists() else []
            results = [x for x in results if (x["variant"], x["channel"]) != (name, channel)]
            results.append(r)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
