"""``agentstream score "TEXT" ...``: redact, score and spot keywords in text, one JSON per line.

Texts come from the arguments or, without any, one per line on stdin. This is how users try
their keyword categories (``--rules``, ``--tenant``, ``--campaign``) and sentiment models
(``--engine``, or the worker's ``AGENTSTREAM_WORKER_SCORING__*`` settings).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "score", help="score text: PII redaction, sentiment and keywords as JSON lines"
    )
    parser.add_argument("texts", nargs="*", help="texts to score (default: one per stdin line)")
    parser.add_argument("--engine", choices=("transformers", "onnx", "vader"))
    parser.add_argument("--rules", help="rules file (default: the worker's, else the shipped one)")
    parser.add_argument("--tenant", default="default")
    parser.add_argument("--campaign", default="default")
    parser.add_argument("--batch", type=int, default=32, help="texts per model call (stdin)")
    parser.set_defaults(func=run)


def _texts(args: argparse.Namespace) -> Iterator[str]:
    if args.texts:
        yield from args.texts
        return
    for line in sys.stdin:
        text = line.rstrip("\r\n")
        if text.strip():
            yield text


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import orjson

    from analytics.scoring.engines import build_scorer
    from analytics.scoring.keywords import KeywordSpotter, categories_or_default
    from analytics.scoring.redact import Redactor
    from analytics.scoring.sentiment import SentimentError
    from analytics.settings import WorkerSettings
    from schemas.rules import RulesError, default_rules, parse_rules

    settings = WorkerSettings()
    rules_path = Path(args.rules) if args.rules else settings.rules_path
    try:
        rules = (
            parse_rules(rules_path.read_text(encoding="utf-8"), str(rules_path))
            if rules_path
            else default_rules()
        )
    except (OSError, RulesError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    resolved = rules.resolve(args.tenant, args.campaign)
    redactor = Redactor(resolved.redact_pii)
    spotter = KeywordSpotter(
        categories_or_default(resolved.categories), settings.scoring.fuzzy_threshold
    )
    try:
        scorer = build_scorer(settings.scoring, args.engine)
    except SentimentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def flush(batch: list[str]) -> None:
        redacted = [redactor.redact(text) for text in batch]
        sentiments = scorer.score_batch([r for r, _ in redacted])
        for (text, kinds), sentiment in zip(redacted, sentiments, strict=True):
            out = {
                "redacted": text,
                "pii": kinds,
                "sentiment": sentiment.model_dump(mode="json"),
                "keywords": [hit.model_dump(mode="json") for hit in spotter.find(text)],
            }
            sys.stdout.write(orjson.dumps(out).decode() + "\n")
        sys.stdout.flush()

    batch: list[str] = []
    for text in _texts(args):
        batch.append(text)
        if len(batch) >= max(1, args.batch) or args.texts:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    return 0
