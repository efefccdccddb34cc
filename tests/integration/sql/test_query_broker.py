"""`agentstream query` on the real broker: the demo calls' real records, the README's queries.

The records the nine demo calls left on the topics (captured from a real pipeline run, call
summaries included) are produced again under a private prefix; the README's example queries
then run through the Kafka reader, the loader and DuckDB, and through the real CLI.
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from agentstream.sql.run import run_query
from agentstream.sql.tables import Filters
from agentstream.stack.topics import create_topics
from schemas.topics import by_name, prefixed
from tests.unit.sql.sql_records import captured

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CALLS = 9


@pytest.fixture(scope="module")
def loaded(kafka_bootstrap: str) -> Iterator[str]:
    """The topic prefix under which the demo records were produced."""
    prefix = "tsql."
    create_topics(kafka_bootstrap, prefix)
    records = captured()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        for table, rows in records.items():
            topic = prefixed(by_name(f"agentstream.{table}"), prefix)
            for r in rows:
                producer.send(
                    topic,
                    value=r.value,
                    key=r.key,
                    partition=r.partition,
                    headers=list(r.headers),
                    timestamp_ms=r.timestamp_ms,
                )
        producer.flush()
    finally:
        producer.close()
    yield prefix


def query(bootstrap: str, prefix: str, sql: str, **filters: object) -> list[dict[str, object]]:
    out = io.StringIO()
    run_query(
        sql,
        bootstrap=bootstrap,
        topic_prefix=prefix,
        filters=Filters(**filters),  # type: ignore[arg-type]
        fmt="json",
        stream=out,
    )
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_escalation_rate_by_campaign(kafka_bootstrap: str, loaded: str) -> None:
    rows = query(
        kafka_bootstrap,
        loaded,
        "SELECT campaign, count(*) AS calls, count_if(escalated) AS escalated "
        "FROM call_summaries GROUP BY campaign ORDER BY campaign",
    )
    assert {r["campaign"]: (r["calls"], r["escalated"]) for r in rows} == {
        "appointments": (2, 1),
        "collections": (3, 2),
        "deflection": (3, 2),
        "interview": (1, 0),
    }


def test_sentiment_in_the_minute_before_an_escalation(kafka_bootstrap: str, loaded: str) -> None:
    rows = query(
        kafka_bootstrap,
        loaded,
        """
        SELECT d.rule_id, count(s.call_sid) AS utterances, avg(s.sentiment.score) AS mean
        FROM decisions d JOIN scores s ON s.call_sid = d.call_sid
         AND s.scored_at_ms BETWEEN d.decided_at_ms - 60000 AND d.decided_at_ms
        WHERE d.decision = 'escalate' GROUP BY ALL ORDER BY mean
        """,
    )
    assert len(rows) == 5 and rows[0]["rule_id"] == "very-negative-utterance"
    assert float(rows[0]["mean"]) < -0.85  # type: ignore[arg-type]


def test_keywords_tenant_filter_and_time_bounds(kafka_bootstrap: str, loaded: str) -> None:
    sql = (
        "SELECT k.category, count(*) AS hits FROM (SELECT unnest(keywords) AS k FROM scores "
        "WHERE call_sid IN (SELECT call_sid FROM decisions WHERE decision = 'escalate')) "
        "GROUP BY ALL ORDER BY hits DESC, k.category"
    )
    everything = {r["category"] for r in query(kafka_bootstrap, loaded, sql)}
    assert {"human_request", "legal_threat", "medical_emergency"} <= everything
    clinic = {r["category"] for r in query(kafka_bootstrap, loaded, sql, tenant="city-clinic")}
    assert clinic == {"medical_emergency"}
    assert query(kafka_bootstrap, loaded, sql, until_ms=0) == []


def test_the_cli_prints_a_table_csv_and_parquet(
    kafka_bootstrap: str, loaded: str, tmp_path: Path
) -> None:
    base = [
        sys.executable, "-m", "agentstream.cli", "query",
        "--bootstrap", kafka_bootstrap, "--topic-prefix", loaded,
    ]  # fmt: skip
    sql = (
        "SELECT call_sid, round(longest_silence_ms / 1000, 1) AS longest_silence_s "
        "FROM call_summaries ORDER BY longest_silence_ms DESC LIMIT 3"
    )
    table = subprocess.run([*base, sql], capture_output=True, text=True, check=True, cwd=ROOT)
    lines = table.stdout.splitlines()
    assert lines[0].startswith("call_sid") and lines[-1] == "(3 rows)", table.stdout
    csv = subprocess.run(
        [*base, "--format", "csv", "SELECT count(*) AS n FROM calls WHERE kind = 'passthru'"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert csv.stdout.splitlines() == ["n", str(CALLS)]
    parquet = tmp_path / "scores.parquet"
    subprocess.run(
        [*base, "--format", "parquet", "-o", str(parquet), "SELECT * FROM scores"],
        check=True,
        cwd=ROOT,
    )
    assert parquet.stat().st_size > 1000
    bad = subprocess.run([*base, "SELECT 1"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "names no topic table" in bad.stderr
