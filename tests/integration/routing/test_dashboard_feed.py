"""The dashboard on the real broker: the demo calls' real records -> feed -> board -> HTTP/SSE."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from agentstream.stack.broker import free_port
from agentstream.stack.topics import create_topics
from routing.dashboard.board import Board
from routing.dashboard.feed import BoardFeed
from routing.dashboard.http import Broadcaster, add_dashboard
from schemas.rules import default_rules
from schemas.topics import by_name, prefixed
from tests.helpers import async_wait_until
from tests.unit.sql.sql_records import captured

pytestmark = pytest.mark.integration

SHOWN = ("calls", "transcripts", "scores", "decisions")


@pytest.fixture
async def dashboard(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[tuple[str, Board]]:
    create_topics(kafka_bootstrap, topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        records = captured()
        for table in SHOWN:
            topic = prefixed(by_name(f"agentstream.{table}"), topic_prefix)
            for r in records[table]:
                await producer.send(topic, value=r.value, key=r.key, partition=r.partition)
        await producer.flush()
    finally:
        await producer.stop()
    # The board ages calls out by the records' own times against its clock: pin the clock to
    # just after the capture, so these recorded calls are live whenever the test runs.
    newest_s = max(r.timestamp_ms for rows in records.values() for r in rows) / 1000
    board = Board(default_rules(), clock=lambda: newest_s + 1.0, linger_ms=10**9)
    feed = BoardFeed(board, bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix)
    app = web.Application()
    add_dashboard(app, Broadcaster(board, interval_s=0.05))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port("127.0.0.1")
    await web.TCPSite(runner, "127.0.0.1", port).start()
    feed.start()
    try:
        yield f"http://127.0.0.1:{port}", board
    finally:
        await feed.stop()
        await runner.cleanup()


async def test_feed_fills_the_board_and_http_serves_it(dashboard: tuple[str, Board]) -> None:
    base, board = dashboard
    await async_wait_until(
        lambda: (
            len(board.calls) == 9
            and sum(c.escalation is not None for c in board.calls.values()) == 5
            and sum(len(c.lines) for c in board.calls.values()) == 27
        ),
        timeout=30,
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/dashboard", allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Location"] == "/dashboard/"
        async with http.get(f"{base}/dashboard/") as response:
            assert response.status == 200 and "live calls" in await response.text()
        async with http.get(f"{base}/dashboard/static/dashboard.js") as response:
            assert response.content_type == "text/javascript"
        async with http.get(f"{base}/dashboard/static/..%2Frules.yaml") as response:
            assert response.status == 404
        async with http.get(f"{base}/dashboard/api/calls") as response:
            rows = (await response.json())["rows"]
        assert [bool(r["escalation"]) for r in rows] == [True] * 5 + [False] * 4
        escalated = rows[0]
        async with http.get(f"{base}/dashboard/api/calls/{escalated['call_sid']}") as response:
            detail = await response.json()
        assert detail["escalation"]["rule_id"] == escalated["escalation"]["rule_id"]
        assert detail["transcript"] and all(line["text"] for line in detail["transcript"])
        assert any(d["decision"] == "escalate" for d in detail["decisions"])
        async with http.get(f"{base}/dashboard/api/calls/nope") as response:
            assert response.status == 404
        async with http.get(f"{base}/dashboard/events") as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            event = b""
            while not event.endswith(b"\n\n") or b"event: snapshot" not in event:
                event += await response.content.readline()
        assert event.count(b'"call_sid"') == 9
