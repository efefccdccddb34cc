"""Keyword recall and precision per category: the demo calls through the telephone channel.

Each scenario of demo/scenarios.yaml (its WAV in demo/calls/) is played as one call of its tenant
and campaign through the channel and the worker's streaming path (asr_harness.py). The keyword
spotter of that tenant/campaign (analytics.keywords, categories from the rules file) runs on the
scripted lines (the truth) and on the transcripts; per call and category the hits are paired:
true = min(expected, found), missed = expected - true, false = found - true. Escalations that
hang on a keyword rule are reported too: does the call still hit the category its rule needs?

    .venv/bin/python bench/keyword_recall.py                          # plain and telephone
    .venv/bin/python bench/keyword_recall.py --variants baseline,bias --channel telephone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, cast

import yaml
from asr_experiments import VARIANTS, Variant, recognizer_for, vad_for
from asr_harness import ROOT, StreamPath, TimedRecognizer
from asr_variants import install_front_end

from agentstream.sim.channel import Channel, apply_channel
from analytics.asr.audio import read_audio
from analytics.asr.wer import word_errors
from analytics.scoring.keywords import KeywordSpotter, categories_or_default
from analytics.worker import service_config
from schemas.rules import RuleSet, default_rules

SCENARIOS = ROOT / "demo" / "scenarios.yaml"


def keyword_rule_categories(rules: RuleSet | Any) -> set[str]:
    return {c for r in rules.rules if getattr(r, "kind", "") == "keyword" for c in r.categories}


async def run_variant(name: str, variant: Variant, channel: Channel) -> dict[str, Any]:
    scenarios = yaml.safe_load(SCENARIOS.read_text())["calls"]
    rules = default_rules()
    recognizer, settings = recognizer_for(variant)
    timed = TimedRecognizer(recognizer)
    undo = install_front_end(variant.front)
    path = StreamPath(timed, service_config(settings), vad_for(variant))
    per_cat: dict[str, Counter[str]] = {}
    calls: list[dict[str, Any]] = []
    errors = words = 0
    await path.start()
    try:
        for sc in scenarios:
            resolved = rules.resolve(sc["tenant"], sc["campaign"])
            spotter = KeywordSpotter(categories_or_default(resolved.categories))
            audio, rate = read_audio(SCENARIOS.parent / "calls" / f"{sc['id']}.wav")
            audio, rate = apply_channel(audio, rate, channel)
            transcripts = await path.call(audio, rate, call_sid=sc["id"], tenant=sc["tenant"])
            text = " ".join(t.text for t in transcripts)
            reference = " ".join(sc["lines"])
            e, w = word_errors(reference, text)
            errors += e
            words += w
            expected = Counter(h.category for line in sc["lines"] for h in spotter.find(line))
            found = Counter(h.category for t in transcripts for h in spotter.find(t.text))
            for cat in set(expected) | set(found):
                tp = min(expected[cat], found[cat])
                c = per_cat.setdefault(cat, Counter())
                c["true"] += tp
                c["missed"] += expected[cat] - tp
                c["false"] += found[cat] - tp
            needed = keyword_rule_categories(resolved) & set(expected)
            calls.append(
                {
                    "call": sc["id"],
                    "expected": dict(expected),
                    "found": dict(found),
                    "keyword_escalation": bool(needed),
                    "caught": bool(needed & set(found)) if needed else None,
                    "text": text,
                }
            )
    finally:
        await path.stop()
        undo()
    return {
        "variant": name,
        "channel": channel,
        "wer": errors / words if words else 0.0,
        "categories": {k: dict(v) for k, v in sorted(per_cat.items())},
        "calls": calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="baseline")
    parser.add_argument("--channel", default="plain,telephone")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "keyword_recall.json"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out: list[dict[str, Any]] = []
    for name in [v for v in args.variants.split(",") if v]:
        for channel in [cast(Channel, c) for c in args.channel.split(",") if c]:
            r = asyncio.run(run_variant(name, VARIANTS[name], channel))
            out.append(r)
            cats = r["categories"]
            tp = sum(c.get("true", 0) for c in cats.values())
            fn = sum(c.get("missed", 0) for c in cats.values())
            fp = sum(c.get("false", 0) for c in cats.values())
            esc = [c for c in r["calls"] if c["keyword_escalation"]]
            caught = sum(1 for c in esc if c["caught"])
            print(
                f"{name} {channel}: WER {r['wer']:.1%}; keywords recall {tp}/{tp + fn}, "
                f"false {fp}; keyword escalations caught {caught}/{len(esc)}"
            )
            for cat, c in cats.items():
                t, m, f = c.get("true", 0), c.get("missed", 0), c.get("false", 0)
                rec = t / (t + m) if t + m else float("nan")
                prec = t / (t + f) if t + f else float("nan")
                print(
                    f"    {cat:20} recall {t}/{t + m} ({rec:.0%})  "
                    f"precision {t}/{t + f} ({prec:.0%})"
                )
            for c in r["calls"]:
                if c["expected"] != c["found"]:
                    print(
                        f"    {c['call']}: expected {c['expected']} found {c['found']}: "
                        f"{c['text']!r}"
                    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
