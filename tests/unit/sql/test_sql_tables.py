"""The SQL loader on real record bytes: topic records -> DuckDB tables typed by the JSON Schemas."""

from __future__ import annotations

import io
from pathlib import Path

import duckdb
import orjson
import pytest

from agentstream.sql.columns import columns, duck_type, load_schema
from agentstream.sql.output import write_result
from agentstream.sql.run import QueryError, load, parse_time
from agentstream.sql.tables import TABLES, Filters, TopicRecord, referenced_tables
from routing.summaries import SummaryBook
from schemas.records import CallEvent, Decision, Score
from tests.unit.sql.sql_records import captured

pytestmark = pytest.mark.unit

# Nine demo calls through the real pipeline (on a busy machine): 5 escalate, 4 do not.
CALLS = 9


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(":memory:")
    records = captured()
    load(connection, {name: records.get(name, []) for name in TABLES}, Filters(), tmp_path)
    return connection


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> object:
    row = con.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_columns_follow_the_json_schemas() -> None:
    scores = columns(load_schema("agentstream.scores"))
    assert scores["sentiment"].startswith('STRUCT("score" DOUBLE, "label" VARCHAR')
    assert scores["keywords"].endswith("[]") and '"span" BIGINT[]' in scores["keywords"]
    assert "MAP(VARCHAR, BIGINT)" in scores["state"]
    calls = columns(load_schema("agentstream.calls"))
    assert calls["params"] == "MAP(VARCHAR, VARCHAR)"
    assert calls["dtmf_digit"] == "VARCHAR"  # str | None
    summaries = columns(load_schema("agentstream.call_summaries"))
    assert summaries["keyword_hits"] == "MAP(VARCHAR, BIGINT)"
    assert summaries["passthru_complete"] == "BOOLEAN"
    assert duck_type({"type": "object"}, {}) == "JSON"
    assert duck_type({"anyOf": [{"type": "integer"}, {"type": "string"}]}, {}) == "JSON"


def test_every_topic_becomes_a_typed_table(con: duckdb.DuckDBPyConnection) -> None:
    assert _one(con, "SELECT count(*) FROM calls WHERE kind = 'start'") == CALLS
    assert _one(con, "SELECT count(DISTINCT call_sid) FROM scores") == CALLS
    assert _one(con, "SELECT count(*) FROM decisions WHERE decision = 'escalate'") == 5
    # Structs, lists and maps answer dotted, indexed and keyed access.
    assert _one(con, "SELECT min(sentiment.score) FROM scores") < -0.5  # type: ignore[operator]
    assert _one(
        con, "SELECT count(*) FROM scores WHERE len(keywords) > 0 AND keywords[1].span[2] > 0"
    )
    assert _one(con, "SELECT count(*) FROM calls WHERE params['Direction'] = 'incoming'") == CALLS
    assert _one(con, "SELECT typeof(_time) FROM decisions LIMIT 1") == "TIMESTAMP"
    assert _one(con, "SELECT bool_and(_time = epoch_ms(decided_at_ms)) FROM decisions")
    # Audio: the frame headers as typed columns and the PCM length, never the audio.
    assert _one(con, "SELECT min(pcm_bytes) FROM audio") > 0  # type: ignore[operator]
    assert _one(con, "SELECT typeof(sequence_number) FROM audio LIMIT 1") == "BIGINT"
    assert _one(con, "SELECT count(*) FROM deadletter") == 0
    # Summaries as routing published them: revisions as late facts came in, the latest kept.
    assert _one(con, "SELECT count(*) FROM call_summaries") == CALLS
    assert _one(con, "SELECT count(*) FROM call_summaries WHERE escalated") == 5
    assert _one(con, "SELECT min(revision) FROM call_summaries") >= 1  # type: ignore[operator]


def test_escalation_rate_by_campaign(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.execute(
        """
        SELECT c.campaign, count(*) AS calls, count(d.call_sid) AS escalated
        FROM calls c LEFT JOIN decisions d ON d.call_sid = c.call_sid AND d.decision = 'escalate'
        WHERE c.kind = 'start' GROUP BY 1 ORDER BY 1
        """
    ).fetchall()
    assert sum(r[1] for r in rows) == CALLS and sum(r[2] for r in rows) == 5


def test_compacted_topic_keeps_the_latest_summary_per_call(tmp_path: Path) -> None:
    records = captured()
    clock_s = [0.0]
    book = SummaryBook(settle_ms=0, clock=lambda: clock_s[0])
    for table, model in (("calls", CallEvent), ("scores", Score), ("decisions", Decision)):
        for r in records[table]:
            item = model.model_validate_json(r.value or b"")
            if isinstance(item, CallEvent):
                book.on_call_event(item)
            elif isinstance(item, Score):
                book.on_score(item)
            elif isinstance(item, Decision):
                book.on_decision(item)
    clock_s[0] = 2e9
    summaries = book.due()
    assert len(summaries) == CALLS
    first = summaries[0]
    late = first.model_copy(update={"revision": 2, "passthru_complete": True})
    summary_records = [
        TopicRecord("call_summaries", 0, i, s.call_sid.encode(), s.to_bytes(), 0)
        for i, s in enumerate([*summaries, late])
    ]
    con = duckdb.connect(":memory:")
    report = load(con, {"call_summaries": summary_records}, Filters(), tmp_path)
    assert report.rows == {"call_summaries": CALLS}
    assert (
        _one(con, f"SELECT revision FROM call_summaries WHERE call_sid = '{first.call_sid}'") == 2
    )
    assert _one(con, "SELECT count(*) FROM call_summaries WHERE escalated") == 5
    assert _one(con, "SELECT sum(keyword_hits['human_request']) FROM call_summaries") >= 1  # type: ignore[operator]


def test_filters_bound_time_tenant_and_campaign(tmp_path: Path) -> None:
    records = captured()
    con = duckdb.connect(":memory:")
    load(con, records, Filters(tenant="acme-finance", campaign="collections"), tmp_path)
    assert _one(con, "SELECT count(*) FROM calls WHERE kind = 'start'") == 3
    assert _one(con, "SELECT count(DISTINCT tenant) FROM scores") == 1
    decided = sorted(orjson.loads(r.value or b"")["decided_at_ms"] for r in records["decisions"])
    middle = decided[len(decided) // 2]
    load(con, records, Filters(since_ms=middle), tmp_path)
    assert _one(con, "SELECT count(*) FROM decisions") == len(decided) - len(decided) // 2
    load(con, records, Filters(until_ms=middle), tmp_path)
    assert _one(con, "SELECT count(*) FROM decisions") == len(decided) // 2


def test_undecodable_records_are_skipped_and_counted(tmp_path: Path) -> None:
    con = duckdb.connect(":memory:")
    bad = TopicRecord("decisions", 0, 0, b"CA1", b"{not json", 0)
    report = load(con, {"decisions": [bad]}, Filters(), tmp_path)
    assert report.undecodable == {"decisions": 1} and report.rows == {"decisions": 0}


def test_output_formats(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    sql = (
        "SELECT campaign, count(*) AS n, avg(sentiment.score) AS mean, min(_time) AS first "
        "FROM scores GROUP BY 1 ORDER BY 1"
    )
    out = io.StringIO()
    assert write_result(con, sql, "table", out) == 4
    lines = out.getvalue().splitlines()
    assert lines[0].split(" | ")[0].strip() == "campaign" and lines[-1] == "(4 rows)"
    out = io.StringIO()
    write_result(con, sql, "csv", out)
    assert out.getvalue().splitlines()[0] == "campaign,n,mean,first"
    out = io.StringIO()
    write_result(con, sql, "json", out)
    rows = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert {"campaign", "n", "mean", "first"} == set(rows[0]) and isinstance(rows[0]["n"], int)
    parquet = tmp_path / "out.parquet"
    assert write_result(con, sql, "parquet", io.StringIO(), str(parquet)) == 4
    assert _one(con, f"SELECT count(*) FROM read_parquet('{parquet}')") == 4
    with pytest.raises(ValueError, match="--output"):
        write_result(con, sql, "parquet", io.StringIO())


def test_referenced_tables_and_times() -> None:
    assert referenced_tables("select * from Scores s join call_summaries c using (call_sid)") == [
        "scores",
        "call_summaries",
    ]
    assert set(TABLES) >= {"calls", "audio", "deadletter"}
    now = 1_800_000_000.0
    assert parse_time("2h", lambda: now) == int((now - 7200) * 1000)
    assert parse_time("2027-01-15T08:00:00Z", lambda: now) == 1_800_000_000_000
    assert parse_time("2027-01-15 08:00", lambda: now) == parse_time(
        "2027-01-15T08:00Z", lambda: now
    )
    assert parse_time("today", lambda: now) == 1_800_000_000_000 - 28_800_000
    assert parse_time("1700000000000", lambda: now) == 1_700_000_000_000
    with pytest.raises(QueryError):
        parse_time("yesterday-ish", lambda: now)
