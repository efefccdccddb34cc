"""The Passthru wait for a call's completion watermark (fake clock), and /ready from heartbeats."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer

from routing.http import create_app
from routing.readiness import WorkerBoard
from routing.router import ListPublisher, Router
from routing.watermark import Watermarks
from schemas.records import CallState, Score, Sentiment, WorkerHeartbeat
from tests.unit.routing.routing_fakes import FakeClock, call_event, rules_with, score

pytestmark = pytest.mark.unit

KEYWORD = {"id": "human", "kind": "keyword", "categories": ["agent_request"], "target": "support"}


def marker(call_sid: str, audio_ms: int, received_at_ms: int, kind: str = "end") -> Score:
    return Score(
        call_sid=call_sid,
        utterance_id=f"{call_sid}-{kind}-{audio_ms}",
        text="",
        end_ms=audio_ms,
        sentiment=Sentiment(score=0.0, label="neutral", confidence=0.0),
        state=CallState(),
        speech_end_at_ms=received_at_ms,
        scored_at_ms=received_at_ms,
        latency_ms=0.0,
        marker=kind,  # type: ignore[arg-type]
    )


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_stopped_call_waits_for_its_end_watermark() -> None:
    clock = FakeClock()
    marks = Watermarks(bound_s=1.5, clock=clock)
    task = asyncio.create_task(marks.wait("c", stopped=lambda: True, decided=lambda: False))
    await _settle()
    marks.advance("c", 5_000, int(clock() * 1000))  # progress is not enough once stopped
    await _settle()
    assert not task.done()
    clock.advance(0.4)
    event = marks.on_marker(marker("c", 6_000, int(clock() * 1000)))
    result = await asyncio.wait_for(task, 5)
    assert result.complete and result.waited_ms == pytest.approx(400)
    assert event.kind == "analysed" and event.complete and event.audio_ms == 6_000


async def test_the_wait_is_bounded_and_says_incomplete() -> None:
    clock = FakeClock()
    marks = Watermarks(bound_s=1.5, clock=clock)
    task = asyncio.create_task(marks.wait("c", stopped=lambda: True, decided=lambda: False))
    await _settle()
    clock.advance(1.5)
    marks.poke("c")
    result = await asyncio.wait_for(task, 5)
    assert not result.complete and result.waited_ms == pytest.approx(1500)
    assert marks.answers.labels("false")._value.get() == 1


async def test_a_streaming_call_waits_for_the_audio_received_before_the_request() -> None:
    clock = FakeClock()
    marks = Watermarks(bound_s=1.5, slack_ms=1000, clock=clock)
    now = int(clock() * 1000)
    marks.advance("c", 10_000, now - 3_000)  # analysed up to audio received 3 s ago
    task = asyncio.create_task(marks.wait("c", stopped=lambda: False, decided=lambda: False))
    await _settle()
    assert not task.done()
    clock.advance(0.3)
    marks.advance("c", 12_500, now - 500)  # audio received 0.5 s before the request: caught up
    result = await asyncio.wait_for(task, 5)
    assert result.complete and result.waited_ms == pytest.approx(300)


async def test_an_escalated_call_does_not_wait() -> None:
    marks = Watermarks(bound_s=1.5, clock=FakeClock())
    result = await marks.wait("c", stopped=lambda: True, decided=lambda: True)
    assert result.complete and result.waited_ms == 0


async def test_passthru_waits_for_the_last_utterance_then_answers_302_complete() -> None:
    sink = ListPublisher()
    router = Router(rules_with(KEYWORD), sink)
    router.ready = True
    marks = Watermarks(bound_s=5.0)  # real clock: nothing below depends on how long it takes
    async with TestClient(TestServer(create_app(router, watermarks=marks))) as client:
        router.on_observed_call_event(call_event("start", "CA1", router.clock() - 10))
        router.on_observed_call_event(call_event("stop", "CA1", router.clock() - 0.5))
        request = asyncio.create_task(client.get("/exotel/passthru?CallSid=CA1"))
        await asyncio.sleep(0.05)
        assert not request.done()  # the last words are still being analysed
        now_ms = int(router.clock() * 1000)
        router.on_score(score("CA1", 1, categories=("agent_request",), scored_at_ms=now_ms))
        marks.on_marker(marker("CA1", 9_000, now_ms))
        response = await asyncio.wait_for(request, 10)
        assert response.status == 302
        body = await response.json()
        assert body["complete"] is True and body["decision"] == "escalate"
        assert body["waited_ms"] >= 0
    [record] = [e for e in sink.call_events if e.kind == "passthru"]
    assert record.complete is True and record.waited_ms is not None and record.answer == "302"


async def test_passthru_answers_200_incomplete_when_the_bound_passes() -> None:
    sink = ListPublisher()
    router = Router(rules_with(KEYWORD), sink)
    router.ready = True
    marks = Watermarks(bound_s=0.0, registry=router.metrics.registry)
    async with TestClient(TestServer(create_app(router, watermarks=marks))) as client:
        router.on_observed_call_event(call_event("stop", "CA2", router.clock()))
        response = await client.get("/exotel/passthru?CallSid=CA2")
        assert response.status == 200
        assert (await response.json())["complete"] is False
        metrics = await (await client.get("/metrics")).text()
        assert 'agentstream_routing_passthru_analysis_total{complete="false"} 1.0' in metrics


def heartbeat(worker: str, partitions: list[int], state: str = "ready") -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=worker,
        state=state,  # type: ignore[arg-type]
        models_loaded=state == "ready",
        assigned=True,
        audio_partitions=partitions,
        partitions_total=8,
        interval_ms=2000,
        sent_at_ms=0,
    )


def test_the_board_needs_live_ready_workers_covering_every_partition() -> None:
    clock = FakeClock()
    board = WorkerBoard(clock=clock)
    assert not board.status()["ready"]
    board.note(heartbeat("w1", [0, 1, 2, 3]))
    board.note(heartbeat("w2", [4, 5, 6, 7], state="starting"))
    assert not board.status()["ready"]  # w2's models are still loading
    board.note(heartbeat("w2", [4, 5, 6, 7]))
    assert board.status() == {
        "ready": True,
        "workers_ready": 2,
        "workers_live": 2,
        "partitions_covered": 8,
        "partitions_total": 8,
    }
    clock.advance(6.1)  # three missed heartbeats: w1 and w2 are gone
    board.note(heartbeat("w2", [4, 5, 6, 7]))
    assert not board.status()["ready"]
    board.note(heartbeat("w1", [0, 1, 2, 3], state="stopping"))
    assert board.status()["workers_live"] == 1


async def test_ready_reflects_routing_and_the_workers() -> None:
    router = Router(rules_with(KEYWORD), ListPublisher())
    board = WorkerBoard()
    async with TestClient(TestServer(create_app(router, board=board))) as client:
        assert (await client.get("/ready")).status == 503
        router.ready = True
        response = await client.get("/ready")
        assert response.status == 503  # routing is, the pipeline is not
        assert (await response.json())["routing"] is True
        board.note(heartbeat("w1", list(range(8))))
        response = await client.get("/ready")
        assert response.status == 200
        body = await response.json()
        assert body["pipeline"] is True and body["workers_ready"] == 1


async def test_a_call_with_untranscribed_speech_is_never_complete() -> None:
    clock = FakeClock()
    marks = Watermarks(bound_s=1.5, clock=clock)
    gap = marker("c", 4_000, int(clock() * 1000), kind="gap")
    gap = gap.model_copy(update={"state": CallState(untranscribed_utterances=1)})
    event = marks.on_marker(gap)
    assert event.untranscribed_utterances == 1 and not event.complete
    task = asyncio.create_task(marks.wait("c", stopped=lambda: True, decided=lambda: False))
    await _settle()
    clock.advance(0.2)
    marks.on_marker(marker("c", 6_000, int(clock() * 1000)))  # the end: analysed, not whole
    result = await asyncio.wait_for(task, 5)
    assert not result.complete and result.waited_ms == pytest.approx(200)  # no wait to the bound
    # another routing instance learns it from the analysed event
    other = Watermarks(bound_s=1.5, clock=clock)
    other.on_event(event)
    other.on_marker(marker("c", 6_000, int(clock() * 1000)))
    assert not other.answer_complete("c", stopped=True, request_at_ms=int(clock() * 1000))
    assert other.satisfied("c", stopped=True, request_at_ms=int(clock() * 1000))


async def test_an_escalated_call_with_a_gap_is_complete() -> None:
    clock = FakeClock()
    marks = Watermarks(bound_s=1.5, clock=clock)
    gap = marker("c", 4_000, int(clock() * 1000), kind="gap")
    marks.on_marker(gap.model_copy(update={"state": CallState(untranscribed_utterances=2)}))
    result = await marks.wait("c", stopped=lambda: True, decided=lambda: True)
    assert result.complete  # an escalation is final: nothing later can change the answer
