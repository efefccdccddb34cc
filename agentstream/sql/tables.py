"""Topic records into DuckDB tables: one table per topic, columns from its JSON Schema.

Each table is named for its topic's last part (``calls``, ``transcripts``, ``scores``,
``decisions``, ``deadletter``, ``audio``, ``call_summaries``) and has, besides the value's
fields, ``_time`` (the record's own event time, UTC), ``_kafka_time``, ``_partition``,
``_offset`` and ``_key``. Audio rows hold the frame's header fields and ``pcm_bytes``, never
the audio. A compacted topic (``call_summaries``) keeps only the latest record per key, as
compaction would. ``--since``/``--until`` bound ``_time``; ``--tenant``/``--campaign`` keep
the rows of one tenant/campaign in every table that has those columns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson

from agentstream.sql.columns import columns, load_schema, quote
from schemas.records import AUDIO_HEADER_PREFIX
from schemas.topics import ALL_TOPICS, TopicSpec

# The field that says when a record happened, per value type (first one present wins).
_TIME_FIELDS = (
    "occurred_at_ms",
    "produced_at_ms",
    "scored_at_ms",
    "decided_at_ms",
    "received_at_ms",
    "ended_at_ms",
)
META_COLUMNS = {
    "_time": "TIMESTAMP",
    "_kafka_time": "TIMESTAMP",
    "_partition": "INTEGER",
    "_offset": "BIGINT",
    "_key": "VARCHAR",
}


@dataclass(frozen=True)
class TopicRecord:
    """One Kafka record as read, with its catalogue topic name (no test prefix)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True)
class Filters:
    since_ms: int | None = None
    until_ms: int | None = None
    tenant: str | None = None
    campaign: str | None = None


@dataclass
class LoadReport:
    rows: dict[str, int] = field(default_factory=dict)
    undecodable: dict[str, int] = field(default_factory=dict)


def table_name(spec: TopicSpec) -> str:
    return spec.name.rsplit(".", 1)[-1]


TABLES: dict[str, TopicSpec] = {table_name(spec): spec for spec in ALL_TOPICS}


def referenced_tables(sql: str) -> list[str]:
    """The topic tables a query names (the only topics worth reading)."""
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql)}
    return [name for name in TABLES if name in words]


def table_columns(spec: TopicSpec) -> dict[str, str]:
    cols = columns(load_schema(spec.name))
    if spec.value_encoding != "JSON":
        cols["pcm_bytes"] = "BIGINT"
    return cols


def _value(spec: TopicSpec, record: TopicRecord) -> dict[str, Any] | None:
    if spec.value_encoding != "JSON":  # audio: metadata in headers, PCM in the value
        body: dict[str, Any] = {
            name[len(AUDIO_HEADER_PREFIX) :]: raw.decode("utf-8", "replace")
            for name, raw in record.headers
            if name.startswith(AUDIO_HEADER_PREFIX)
        }
        body["pcm_bytes"] = len(record.value or b"")
        return body
    try:
        decoded = orjson.loads(record.value or b"null")
    except orjson.JSONDecodeError:
        return None
    return decoded if isinstance(decoded, dict) else None


def _event_ms(body: dict[str, Any], fallback: int) -> int:
    for name in _TIME_FIELDS:
        value = body.get(name)
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return fallback


def _keep(body: dict[str, Any], at_ms: int, filters: Filters) -> bool:
    if filters.since_ms is not None and at_ms < filters.since_ms:
        return False
    if filters.until_ms is not None and at_ms >= filters.until_ms:
        return False
    if filters.tenant is not None and body.get("tenant", filters.tenant) != filters.tenant:
        return False
    return filters.campaign is None or body.get("campaign", filters.campaign) == filters.campaign


def rows_for(
    spec: TopicSpec, records: Iterable[TopicRecord], filters: Filters, report: LoadReport
) -> list[dict[str, Any]]:
    """The rows of one table (value fields plus the ``_`` columns), filtered."""
    rows: list[dict[str, Any]] = []
    latest: dict[bytes | None, int] = {}
    bad = 0
    for record in records:
        body = _value(spec, record)
        if body is None:
            bad += 1
            continue
        at_ms = _event_ms(body, record.timestamp_ms)
        if not _keep(body, at_ms, filters):
            continue
        body["_time_ms"] = at_ms
        body["_kafka_ms"] = record.timestamp_ms
        body["_partition"] = record.partition
        body["_offset"] = record.offset
        body["_key"] = record.key.decode("utf-8", "replace") if record.key is not None else None
        if spec.cleanup_policy == "compact" and record.key is not None:
            if record.key in latest:
                rows[latest[record.key]] = body
                continue
            latest[record.key] = len(rows)
        rows.append(body)
    if bad:
        report.undecodable[table_name(spec)] = bad
    return rows


def _columns_sql(cols: dict[str, str]) -> str:
    return "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in cols.items()) + "}"


def load_table(
    con: duckdb.DuckDBPyConnection,
    spec: TopicSpec,
    records: Iterable[TopicRecord],
    filters: Filters,
    workdir: Path,
    report: LoadReport,
) -> int:
    """Create the topic's table in ``con`` (replacing it); returns the number of rows."""
    name = table_name(spec)
    cols = table_columns(spec)
    rows = rows_for(spec, records, filters, report)
    report.rows[name] = len(rows)
    meta = ", ".join(f"{quote(c)} {t}" for c, t in META_COLUMNS.items())
    con.execute(f"DROP TABLE IF EXISTS {quote(name)}")
    if not rows:
        body = ", ".join(f"{quote(c)} {t}" for c, t in cols.items())
        con.execute(f"CREATE TABLE {quote(name)} ({body}, {meta})")
        return 0
    path = workdir / f"{name}.jsonl"
    with path.open("wb") as out:
        for row in rows:
            out.write(orjson.dumps(row))
            out.write(b"\n")
    read_cols = {
        **cols,
        "_time_ms": "BIGINT",
        "_kafka_ms": "BIGINT",
        "_partition": "INTEGER",
        "_offset": "BIGINT",
        "_key": "VARCHAR",
    }
    value_cols = ", ".join(quote(c) for c in cols)
    # Names and types come from our own JSON Schemas, quoted; the path is a parameter.
    con.execute(
        f"CREATE TABLE {quote(name)} AS SELECT {value_cols}, "  # noqa: S608
        "epoch_ms(_time_ms) AS _time, epoch_ms(_kafka_ms) AS _kafka_time, "
        "_partition, _offset, _key "
        f"FROM read_json(?, format='newline_delimited', columns={_columns_sql(read_cols)})",
        [str(path)],
    )
    return len(rows)
