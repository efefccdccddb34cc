"""Print a DuckDB result as an aligned table, CSV or JSON lines; write Parquet to a file."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import math
from collections.abc import Sequence
from typing import IO, Any, Literal

import duckdb
import orjson

Format = Literal["table", "csv", "json", "parquet"]


def _plain(value: Any) -> Any:
    """A JSON-ready value (timestamps as ISO text, decimals as floats)."""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="milliseconds")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def cell(value: Any) -> str:
    """One value as table or CSV text: floats to 4 decimals, nested values as JSON."""
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        text = f"{value:.4f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def render_table(names: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int = 60) -> str:
    texts = [[cell(v) for v in row] for row in rows]
    texts = [[t if len(t) <= max_width else t[: max_width - 1] + "…" for t in row] for row in texts]
    widths = [max([len(n), *(len(r[i]) for r in texts)]) for i, n in enumerate(names)]
    numeric = [
        all(
            isinstance(row[i], int | float) and not isinstance(row[i], bool) or row[i] is None
            for row in rows
        )
        and bool(rows)
        for i in range(len(names))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return " | ".join(parts).rstrip()

    out = [line(names), "-+-".join("-" * w for w in widths)]
    out.extend(line(r) for r in texts)
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"


def write_result(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    fmt: Format,
    stream: IO[str],
    output_path: str | None = None,
) -> int:
    """Run ``sql`` and write its result; returns the number of rows (Parquet: of the file)."""
    if fmt == "parquet":
        if not output_path:
            raise ValueError("--format parquet needs --output FILE")
        con.execute(f"COPY ({sql}) TO ? (FORMAT parquet)", [output_path])
        count = con.execute("SELECT count(*) FROM read_parquet(?)", [output_path]).fetchone()
        return int(count[0]) if count else 0
    result = con.execute(sql)
    names = [d[0] for d in result.description or ()]
    rows = result.fetchall()
    if fmt == "table":
        stream.write(render_table(names, rows))
    elif fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([cell(v) for v in row] for row in rows)
    else:
        for row in rows:
            obj = {n: _plain(v) for n, v in zip(names, row, strict=True)}
            stream.write(orjson.dumps(obj).decode() + "\n")
    return len(rows)
