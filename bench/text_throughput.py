"""Redaction and keyword-spotting throughput on call-centre-like utterances.

Keyword matching uses 200 phrases (the default categories plus generated multi-word phrases),
with ASR-like misspellings in part of the input so the fuzzy path is exercised. Single thread.

    .venv/bin/python bench/text_throughput.py [--n 20000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analytics.scoring.keywords import DEFAULT_CATEGORIES, KeywordSpotter  # noqa: E402
from analytics.scoring.redact import Redactor  # noqa: E402
from schemas.rules import PhraseCategory  # noqa: E402

TEMPLATES = [
    "hi I am calling about my loan account the emi was deducted twice this month",
    "my card number is 4111 1111 1111 1111 and the expiry is next year",
    "the otp is four two seven one please verify it quickly",
    "you can reach me on 98450 12345 or write to ravi.kumar@gmail.com",
    "I want to talk to a human right now this is ridiculous",
    "I already paid five thousand rupees on the twelfth of march",
    "can I book an appointment with the doctor for tomorrow morning",
    "I do not want to cancel I just want to change my plan",
    "my aadhaar is 2345 6789 0127 and pan is ABCPE1234F",
    "let me speek to your supervisr or I will go to the consumer cort",
    "what are your opening hours on saturday and sunday",
    "the interview is scheduled for three pm can you confirm the address",
]
WORDS = (
    "account balance statement branch address appointment doctor schedule delivery order "
    "package refund invoice upgrade downgrade plan tariff roaming network signal speed router "
    "technician visit warranty repair replacement insurance claim policy premium renewal"
).split()


def phrases_200(seed: int) -> dict[str, PhraseCategory]:
    rng = random.Random(seed)
    cats: dict[str, PhraseCategory] = dict(DEFAULT_CATEGORIES)
    count = sum(len(c.phrases) for c in cats.values())
    extra: list[str] = []
    while count + len(extra) < 200:
        extra.append(" ".join(rng.sample(WORDS, rng.choice((1, 2, 3)))))
    cats["generated"] = PhraseCategory(phrases=extra)
    return cats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="utterances per measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/text_throughput.json")
    args = parser.parse_args()
    rng = random.Random(7)
    texts = [rng.choice(TEMPLATES) + f" reference {rng.randint(1, 99)}" for _ in range(args.n)]
    redactor = Redactor()
    t0 = time.perf_counter()
    for text in texts:
        redactor.redact(text)
    redact_s = time.perf_counter() - t0

    cats = phrases_200(1)
    n_phrases = sum(len(c.phrases) for c in cats.values())
    spotter = KeywordSpotter(cats)
    t0 = time.perf_counter()
    hits = 0
    for text in texts:
        hits += len(spotter.find(text))
    kw_s = time.perf_counter() - t0
    # Cold cache: every utterance new (a unique misspelling per text defeats the memo).
    cold = [t + f" zq{i}x" for i, t in enumerate(texts[: max(1, args.n // 10)])]
    t0 = time.perf_counter()
    for text in cold:
        spotter.find(text)
    cold_s = time.perf_counter() - t0

    words = sum(len(t.split()) for t in texts) / len(texts)
    result = {
        "utterances": args.n,
        "mean_words": round(words, 1),
        "redaction_per_s": round(args.n / redact_s),
        "redaction_us_each": round(redact_s / args.n * 1e6, 1),
        "keyword_phrases": n_phrases,
        "keywords_per_s": round(args.n / kw_s),
        "keywords_us_each": round(kw_s / args.n * 1e6, 1),
        "keywords_unseen_word_us_each": round(cold_s / len(cold) * 1e6, 1),
        "hits": hits,
    }
    for key, value in result.items():
        print(f"{key:>30}: {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
