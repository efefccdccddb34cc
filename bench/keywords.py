"""Keyword precision and recall: demo calls, scripted calls, and false hits on a speech corpus.

Three sets, each spotted with the categories the shipped rules file resolves for the call's
tenant/campaign (``schemas/data/rules.yaml``), exactly as the scoring stage does:

- **demo**: the lines of ``demo/scenarios.yaml`` (the text espeak-ng speaks), labelled here;
  with ``--asr`` also what the ASR engine hears in ``demo/calls/*.wav`` (the call's categories
  against the union of its lines' labels, since the recogniser may cut utterances differently);
- **scripted**: 16 calls written for this bench (8 calm, 8 that must escalate, as in issue 13),
  with recogniser-like mishearings and near-miss words ("sun", "sued", "pursue", "issue",
  "suit", "count", "layer", "managed", "emergence", ...) in the calm ones;
- **corpus**: the reference texts of ``/work/shared/data/speech/corpus.tsv`` (read speech, news,
  no call-centre escalations): every hit there is a false hit, listed so a reader can judge.

Precision and recall count (utterance, category) pairs. The repetition part prints, per call,
the longest run of consecutive repeats at the rules file's default ``similarity`` (the shipped
``bot-failing`` rule fires at 2): only the repeating calls should reach it. Prints the figures
and every miss and false hit; ``--json`` prints them as one JSON object.

    .venv/bin/python bench/keywords.py [--asr] [--corpus PATH] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analytics.scoring.callstate import (  # noqa: E402
    DEFAULT_REPEAT_SIMILARITY,
    FoldParams,
    next_repeat_run,
)
from analytics.scoring.keywords import KeywordSpotter, categories_or_default  # noqa: E402
from schemas.rules import RulesFile, default_rules  # noqa: E402

CORPUS = Path("/work/shared/data/speech/corpus.tsv")

# demo/scenarios.yaml: the categories each line must hit (lines not listed hit nothing).
DEMO_LABELS: dict[str, set[str]] = {
    "This is terrible service and I am really angry.": {"complaint"},
    "You are useless, this is the worst company ever.": {"complaint"},
    "Can I please speak to a human agent?": {"human_request"},
    "You charged me twice this month.": {"payment_dispute"},
    "If this is not fixed today I will call my lawyer and take legal action.": {"legal_threat"},
    "This is an emergency, my father has chest pain.": {"medical_emergency"},
    "Please send an ambulance.": {"medical_emergency"},
}

Line = tuple[str, frozenset[str]]


def line(text: str, *categories: str) -> Line:
    return text, frozenset(categories)


# (tenant, campaign, lines): 8 calm calls full of near misses, 8 that must escalate, some of
# their key words misheard the way a recogniser does (inflections, split words, one letter).
SCRIPTED: list[tuple[str, str, list[Line]]] = [
    ("acme-finance", "collections", [
        line("hi, I will pay the amount soon, maybe sun day"),
        line("the sun was out so I went to the bank"),
        line("I have an issue with the app but I will pursue it myself"),
        line("I sued nobody, I just want the receipt"),
        line("thanks, that suits me"),
    ]),
    ("acme-finance", "collections", [
        line("can you count the instalments I paid"),
        line("he managed the payment last month"),
        line("the courtyard gate is closed so leave it at the door"),
    ]),
    ("shopnow", "deflection", [
        line("is my order shipped"),
        line("I do not want to cancel, I just want to change the colour"),
        line("the layer of paint on the table is scratched"),
        line("can the delivery person come after six"),
    ]),
    ("city-clinic", "appointments", [
        line("I would like to reschedule my appointment", "appointment_change"),
        line("the emergence of new clinics near me is great"),
        line("thank you, see you on Tuesday"),
    ]),
    ("hirewell", "interview", [
        line("I supervised a team of five engineers"),
        line("I pursued a degree in computer science"),
    ]),
    ("shopnow", "deflection", [
        line("what is the status of my refund", "payment_dispute"),
        line("okay, it says processing, thanks"),
    ]),
    ("acme-finance", "collections", [
        line("I can pay five thousand today"),
        line("please send the link on whatsapp"),
        line("yes the issue is resolved"),
    ]),
    ("city-clinic", "appointments", [
        line("my daughter has a mild fever"),
        line("no, she is not bleeding and she is breathing fine"),  # not negatable: a hit
        line("a morning slot works"),
    ]),
    # --- escalations ---
    ("acme-finance", "collections", [
        line("I want to talk to a human", "human_request"),
    ]),
    ("shopnow", "deflection", [
        line("get me your super visor right now", "human_request"),
    ]),
    ("shopnow", "deflection", [
        line("this is ridiculous, you people are useless", "complaint"),
        line("I am fed up with this worst service", "complaint"),
    ]),
    ("acme-finance", "collections", [
        line("if you call again I will sue you", "legal_threat"),
        line("my lawyers will send a legal notice", "legal_threat"),
    ]),
    ("acme-finance", "collections", [
        line("I already payed this loan last week", "payment_dispute"),
        line("you double charged me, I want a refund", "payment_dispute"),
    ]),
    ("city-clinic", "appointments", [
        line("my father has chest pains and he cannot breath", "medical_emergency"),
        line("please send an ambulanse", "medical_emergency"),
    ]),
    ("shopnow", "deflection", [
        line("cancel my order, this is pathetic", "cancellation"),
        line("I said cancelled, close my account", "cancellation"),
    ]),
    ("shopnow", "deflection", [
        line("change my plan"),
        line("change my plan please"),
        line("I want to change my plane"),
    ]),
]  # fmt: skip


@dataclass
class Tally:
    """(utterance, category) pairs: hits expected and hits found."""

    utterances: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    false_hits: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)

    def add(self, text: str, expected: frozenset[str] | set[str], found: dict[str, str]) -> None:
        self.utterances += 1
        for category, matched in sorted(found.items()):
            if category in expected:
                self.tp += 1
            else:
                self.fp += 1
                self.false_hits.append(f"{category} ({matched!r}): {text}")
        for category in sorted(set(expected) - set(found)):
            self.fn += 1
            self.misses.append(f"{category}: {text}")

    def figures(self) -> dict[str, object]:
        found, expected = self.tp + self.fp, self.tp + self.fn
        return {
            "utterances": self.utterances,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": round(self.tp / found, 3) if found else None,
            "recall": round(self.tp / expected, 3) if expected else None,
            "false_hits": self.false_hits,
            "misses": self.misses,
        }


class Spotters:
    """One spotter per tenant/campaign, from the rules file (as the scoring stage builds them)."""

    def __init__(self, rules: RulesFile, threshold: float) -> None:
        self.rules = rules
        self.threshold = threshold
        self._cache: dict[tuple[str, str], KeywordSpotter] = {}

    def find(self, text: str, tenant: str = "default", campaign: str = "default") -> dict[str, str]:
        key = (tenant, campaign)
        if key not in self._cache:
            categories = categories_or_default(self.rules.resolve(tenant, campaign).categories)
            self._cache[key] = KeywordSpotter(categories, self.threshold)
        return {hit.category: hit.matched for hit in self._cache[key].find(text)}


def demo_text(spotters: Spotters) -> Tally:
    tally = Tally()
    for call in yaml.safe_load((ROOT / "demo" / "scenarios.yaml").read_text())["calls"]:
        for text in call["lines"]:
            found = spotters.find(
                text, call.get("tenant", "default"), call.get("campaign", "default")
            )
            tally.add(text, DEMO_LABELS.get(text, set()), found)
    return tally


def longest_run(texts: list[str], threshold: float = DEFAULT_REPEAT_SIMILARITY) -> int:
    """The longest run of consecutive repeats, as the scoring fold counts them."""
    keep = FoldParams().recent_texts
    run = best = 0
    recent: list[str] = []
    for text in texts:
        run = next_repeat_run(recent, run, text, threshold)
        best = max(best, run)
        recent = [*recent, text][-keep:]
    return best


def repeats(calls: dict[str, list[str]]) -> dict[str, int]:
    return {name: longest_run(texts) for name, texts in calls.items()}


def demo_asr(spotters: Spotters, heard: dict[str, list[str]]) -> Tally:
    """What the ASR engine hears in the demo WAVs, call by call (slow: loads the recogniser)."""
    from analytics.asr.engines import load_recognizer
    from analytics.asr.offline import transcribe_file
    from analytics.asr.vad import SileroVad
    from analytics.settings import WorkerSettings
    from analytics.worker import service_config

    settings = WorkerSettings()
    recognizer = load_recognizer(settings)
    recognizer.warm_up()
    vad, config = SileroVad(), service_config(settings)
    tally = Tally()
    for call in yaml.safe_load((ROOT / "demo" / "scenarios.yaml").read_text())["calls"]:
        wav = ROOT / "demo" / "calls" / f"{call['id']}.wav"
        result = transcribe_file(str(wav), recognizer, vad, config, None, None)
        expected: set[str] = set()
        for text in call["lines"]:
            expected |= DEMO_LABELS.get(text, set())
        found: dict[str, str] = {}
        texts = [t.text for t in result.transcripts if t.is_final]
        heard[call["id"]] = texts
        for text in texts:
            found.update(spotters.find(text, call.get("tenant", "default"), call["campaign"]))
        tally.add(f"[{call['id']}] " + " | ".join(texts), expected, found)
    return tally


def scripted(spotters: Spotters) -> Tally:
    tally = Tally()
    for tenant, campaign, lines in SCRIPTED:
        for text, expected in lines:
            tally.add(text, expected, spotters.find(text, tenant, campaign))
    return tally


def corpus(spotters: Spotters, path: Path) -> Tally:
    tally = Tally()
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    for row in rows:
        text = row.split("\t")[1] if "\t" in row else ""
        if text.strip():
            tally.add(text[:100], set(), spotters.find(text))
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--asr", action="store_true", help="also transcribe demo/calls/*.wav")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="speech corpus TSV")
    parser.add_argument("--threshold", type=float, default=0.8, help="fuzzy threshold")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    spotters = Spotters(default_rules(), args.threshold)
    results: dict[str, Tally] = {"demo (script text)": demo_text(spotters)}
    demo_calls = yaml.safe_load((ROOT / "demo" / "scenarios.yaml").read_text())["calls"]
    runs = {"demo script": repeats({c["id"]: c["lines"] for c in demo_calls})}
    heard: dict[str, list[str]] = {}
    if args.asr:
        results["demo (ASR, per call)"] = demo_asr(spotters, heard)
        runs["demo ASR"] = repeats(heard)
    runs["scripted"] = repeats({str(n): [t for t, _ in c[2]] for n, c in enumerate(SCRIPTED)})
    results["scripted"] = scripted(spotters)
    if args.corpus.exists():
        results["corpus (false hits)"] = corpus(spotters, args.corpus)
    figures = {name: tally.figures() for name, tally in results.items()}
    if args.json:
        print(json.dumps({"keywords": figures, "repeat_runs": runs}, indent=2))
        return 0
    head = f"{'set':<22} {'utts':>5} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>9} {'recall':>7}"
    print(head + f" {'fp/100 utts':>11}")
    for name, f in figures.items():
        per_100 = 100 * int(f["fp"]) / max(1, int(f["utterances"]))  # type: ignore[call-overload]
        precision = "-" if f["precision"] is None else f["precision"]
        recall = "-" if f["recall"] is None else f["recall"]
        print(
            f"{name:<22} {f['utterances']:>5} {f['tp']:>4} {f['fp']:>4} {f['fn']:>4} "
            f"{precision!s:>9} {recall!s:>7} {per_100:>11.1f}"
        )
    for name, f in figures.items():
        for kind, label in (("false_hits", "false hit"), ("misses", "miss")):
            for item in f[kind]:  # type: ignore[attr-defined]
                print(f"  {name}: {label}: {item}")
    print(f"repetition: longest run of repeats per call (similarity {DEFAULT_REPEAT_SIMILARITY})")
    for name, by_call in runs.items():
        print(f"  {name}: " + ", ".join(f"{call}={run}" for call, run in by_call.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
