"""``agentstream query "SQL"``: SQL over the topics, one DuckDB table per topic.

The query names the tables it needs (``calls``, ``transcripts``, ``scores``, ``decisions``,
``deadletter``, ``audio``, ``call_summaries``); only those topics are read, from the beginning
to their end. Columns come from the topics' JSON Schemas (``schemas/json/``): nested values are
structs (``sentiment.score``), lists and maps; every table also has ``_time`` (the record's own
event time, UTC), ``_kafka_time``, ``_partition``, ``_offset`` and ``_key``. The result prints as
a table, or ``--format csv|json`` (JSON lines) to stdout, or ``--format parquet --output FILE``.
One call's whole story is ``agentstream call CALL_SID``.
"""

from __future__ import annotations

import argparse
import sys
import time

from agentstream.commands.tail import add_kafka_options, settings_from
from agentstream.sql.run import QueryError, parse_time, run_query
from agentstream.sql.tables import TABLES, Filters


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "query",
        help="SQL over the topics (DuckDB; one table per topic)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sql", help=f"a DuckDB query over: {', '.join(TABLES)}")
    add_kafka_options(parser)
    parser.add_argument(
        "--format",
        choices=("table", "csv", "json", "parquet"),
        default="table",
        dest="fmt",
        help="table (default), csv, json (one object per line), parquet (needs -o)",
    )
    parser.add_argument("-o", "--output", help="write here instead of stdout (parquet: required)")
    parser.add_argument(
        "--since", help="records at or after: ISO 8601 (UTC), epoch ms, 'today', or 15m/2h/7d ago"
    )
    parser.add_argument("--until", help="records before (same forms as --since)")
    parser.add_argument("--tenant", help="only this tenant's records")
    parser.add_argument("--campaign", help="only this campaign's records")
    parser.add_argument(
        "--idle-ms", type=int, default=500, help="a topic is read when it is quiet this long"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    try:
        filters = Filters(
            since_ms=parse_time(args.since, time.time) if args.since else None,
            until_ms=parse_time(args.until, time.time) if args.until else None,
            tenant=args.tenant,
            campaign=args.campaign,
        )
        if args.output and args.fmt != "parquet":
            with open(args.output, "w", encoding="utf-8", newline="") as out:
                run_query(
                    args.sql,
                    bootstrap=settings.bootstrap_servers,
                    topic_prefix=settings.topic_prefix,
                    filters=filters,
                    fmt=args.fmt,
                    stream=out,
                    idle_ms=args.idle_ms,
                )
            return 0
        count = run_query(
            args.sql,
            bootstrap=settings.bootstrap_servers,
            topic_prefix=settings.topic_prefix,
            filters=filters,
            fmt=args.fmt,
            output_path=args.output,
            idle_ms=args.idle_ms,
        )
    except (QueryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.fmt == "parquet":
        print(f"wrote {count} rows to {args.output}", file=sys.stderr)
    return 0
