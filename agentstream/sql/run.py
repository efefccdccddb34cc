"""One ``agentstream query`` run: read the tables a query names, load them, print the result."""

from __future__ import annotations

import datetime as dt
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import duckdb

from agentstream.sql.output import Format, write_result
from agentstream.sql.reader import read_topics
from agentstream.sql.tables import (
    TABLES,
    Filters,
    LoadReport,
    TopicRecord,
    load_table,
    referenced_tables,
)
from schemas.topics import prefixed

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class QueryError(ValueError):
    """The query or its options are invalid (exit code 2, message for the analyst)."""


def parse_time(text: str, now: Callable[[], float]) -> int:
    """UTC epoch ms from ISO 8601 (naive = UTC), epoch ms, ``today`` or ``15m``/``2h``/``1d``."""
    text = text.strip()
    if text == "today":
        today = dt.datetime.fromtimestamp(now(), dt.UTC).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        return int(today.timestamp() * 1000)
    if text.isdigit():
        return int(text)
    match = _RELATIVE.match(text)
    if match:
        return int((now() - float(match.group(1)) * _UNIT_S[match.group(2)]) * 1000)
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise QueryError(
            f"cannot read time {text!r}: use ISO 8601, epoch ms, 'today' or 2h"
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


def load(
    con: duckdb.DuckDBPyConnection,
    records: dict[str, list[TopicRecord]],
    filters: Filters,
    workdir: Path,
) -> LoadReport:
    """Create a table per catalogue topic in ``records`` (keyed by table name)."""
    report = LoadReport()
    for name, rows in records.items():
        load_table(con, TABLES[name], rows, filters, workdir, report)
    return report


def run_query(
    sql: str,
    *,
    bootstrap: str,
    topic_prefix: str = "",
    filters: Filters | None = None,
    fmt: Format = "table",
    output_path: str | None = None,
    stream: IO[str] | None = None,
    idle_ms: int = 500,
) -> int:
    """Read the named topics, run ``sql`` over them, write the result; returns the row count."""
    names = referenced_tables(sql)
    if not names:
        raise QueryError(f"the query names no topic table; tables: {', '.join(TABLES)}")
    topics = {prefixed(TABLES[name], topic_prefix): name for name in names}
    records = read_topics(bootstrap, topics, idle_ms=idle_ms)
    con = duckdb.connect(":memory:")
    try:
        with tempfile.TemporaryDirectory(prefix="agentstream-sql-") as tmp:
            report = load(con, records, filters or Filters(), Path(tmp))
        for table, bad in sorted(report.undecodable.items()):
            print(f"warning: {bad} undecodable records skipped in {table}", file=sys.stderr)
        try:
            return write_result(con, sql, fmt, stream or sys.stdout, output_path)
        except duckdb.Error as exc:
            raise QueryError(str(exc)) from exc
    finally:
        con.close()
