"""The HTTP callbacks through a real aiohttp server: every parameter form from the Exotel doc."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from routing.http import create_app
from routing.router import ListPublisher, Router
from schemas.records import CallEvent, Decision, Evidence, Transcript
from schemas.rules import RulesFile
from tests.unit.routing.routing_fakes import rules_with, score

pytestmark = pytest.mark.unit

RULES = rules_with(
    {"id": "human", "kind": "keyword", "categories": ["human_request"], "target": "support"},
    {"id": "zero", "kind": "dtmf", "digits": ["0"], "target": "legal"},
    {
        "id": "loud",
        "kind": "sentiment_rolling",
        "threshold": -0.5,
        "last_n": 2,
        "min_utterances": 2,
        "target": "trunked",
    },
)


def make_router(rules: RulesFile = RULES, grace_ms: int = 300) -> tuple[Router, ListPublisher]:
    sink = ListPublisher()
    router = Router(rules, sink, grace_ms=grace_ms)
    router.ready = True
    return router, sink


@pytest.fixture
async def env() -> AsyncIterator[tuple[TestClient, Router, ListPublisher]]:
    router, sink = make_router()
    client = TestClient(TestServer(create_app(router)))
    await client.start_server()
    try:
        yield client, router, sink
    finally:
        await client.close()


def now_ms() -> int:
    return int(time.time() * 1000)


def escalate(router: Router, call_sid: str) -> None:
    router.on_score(score(call_sid, 1, -0.9, scored_at_ms=now_ms()))
    d = router.on_score(score(call_sid, 2, -0.8, "this is useless", scored_at_ms=now_ms()))
    assert d is not None and d.decision == "escalate"


def calm(router: Router, call_sid: str) -> None:
    d = router.on_score(score(call_sid, 1, 0.6, scored_at_ms=now_ms()))
    assert d is not None and d.decision == "continue"


Env = tuple[TestClient, Router, ListPublisher]


async def test_get_escalated_302_calm_200_unknown_default(env: Env) -> None:
    client, router, sink = env
    escalate(router, "CA-angry")
    calm(router, "CA-calm")
    r = await client.get("/exotel/passthru", params={"CallSid": "CA-angry", "From": "+9198"})
    assert r.status == 302
    body = await r.json()
    assert body["decision"] == "escalate" and body["rule_id"] == "loud"
    assert (await client.get("/exotel/passthru?CallSid=CA-calm")).status == 200
    r = await client.get("/exotel/passthru?CallSid=CA-never-seen")
    assert r.status == 200 and (await r.json())["decision"] == "unknown"
    recorded = [e for e in sink.call_events if e.kind == "passthru"]
    assert [(e.call_sid, e.answer) for e in recorded] == [
        ("CA-angry", "302"),
        ("CA-calm", "200"),
        ("CA-never-seen", "200 unknown call"),  # not a number: other instances do not pin it
    ]
    assert recorded[0].params["From"] == "+9198"


async def test_stream_bracket_fields_are_recorded(env: Env) -> None:
    client, router, sink = env
    calm(router, "CA1")
    query = (
        "CallSid=CA1&CallFrom=09876543210&CallTo=08047112233&Direction=incoming"
        "&DialCallDuration=0&StartTime=2025-01-01+10%3A00%3A00&CallType=call-attempt"
        "&CustomField=abc&flow_id=42&Stream%5BStreamSID%5D=ST1&Stream%5BStatus%5D=completed"
        "&Stream%5BDuration%5D=%2233%22&Stream%5BDisconnectedBy%5D=bot"
        "&Stream%5BRecordingUrl%5D=https%3A%2F%2Fx%2Fr.wav&Stream%5BDetailedStatus%5D=ok"
        "&Stream%5BError%5D="
    )
    r = await client.get("/exotel/passthru?" + query)
    assert r.status == 200
    [event] = sink.call_events
    assert event.stream_sid == "ST1"
    assert event.params["Stream[DisconnectedBy]"] == "bot"
    assert event.params["StartTime"] == "2025-01-01 10:00:00"


async def test_stream_as_one_json_string(env: Env) -> None:
    client, router, sink = env
    escalate(router, "CA2")
    stream = orjson.dumps({"StreamSID": "ST2", "Status": "completed", "Duration": "12"}).decode()
    r = await client.get("/exotel/passthru", params={"CallSid": "CA2", "Stream": stream})
    assert r.status == 302
    assert sink.call_events[-1].stream_sid == "ST2"


async def test_quoted_digits_trigger_the_dtmf_rule(env: Env) -> None:
    client, router, sink = env
    calm(router, "CA3")
    r = await client.get("/exotel/passthru", params={"CallSid": "CA3", "digits": '"0"'})
    assert r.status == 302 and (await r.json())["rule_id"] == "zero"
    assert [d.rule_id for d in sink.decisions if d.decision == "escalate"] == ["zero"]
    r = await client.get("/exotel/passthru", params={"CallSid": "CA4", "digits": '"5"'})
    assert r.status == 200


async def test_post_form_and_post_json(env: Env) -> None:
    client, router, sink = env
    escalate(router, "CA5")
    r = await client.post(
        "/exotel/passthru", data={"CallSid": "CA5", "Stream[StreamSID]": "ST5", "digits": '""'}
    )
    assert r.status == 302
    r = await client.post(
        "/exotel/passthru",
        json={
            "CallSid": "CA5",
            "Stream": {"StreamSID": "ST5", "Duration": 9},
            "DialCallDuration": 3,
        },
    )
    assert r.status == 302
    assert sink.call_events[-1].params["DialCallDuration"] == "3"
    # a JSON body without the JSON content type, and a query string on a POST
    r = await client.post(
        "/exotel/passthru", data=b'{"CallSid": "CA5"}', headers={"Content-Type": "text/plain"}
    )
    assert r.status == 302
    r = await client.post("/exotel/passthru?CallSid=CA5")
    assert r.status == 302


async def test_repeated_callbacks_give_the_first_answer(env: Env) -> None:
    client, router, _ = env
    calm(router, "CA6")
    assert (await client.get("/exotel/passthru?CallSid=CA6")).status == 200
    router.on_score(score("CA6", 2, -0.9, scored_at_ms=now_ms()))
    router.on_score(score("CA6", 3, -0.9, scored_at_ms=now_ms()))
    assert router.book.get("CA6").escalation is not None  # type: ignore[union-attr]
    assert (await client.get("/exotel/passthru?CallSid=CA6")).status == 200


@pytest.mark.parametrize(
    ("method", "kwargs", "words"),
    [
        ("get", {"params": {"From": "+91"}}, "CallSid"),
        ("get", {"params": {"CallSid": "CA", "Stream": "{not json"}}, "Stream"),
        ("get", {"params": {"CallSid": "CA", "Stream": "[1, 2]"}}, "Stream"),
        ("post", {"data": b"{broken", "headers": {"Content-Type": "application/json"}}, "JSON"),
        ("post", {"json": [1, 2]}, "object"),
        ("post", {"data": {f"k{n}": "v" for n in range(300)}}, "parameters"),
        ("post", {"data": b"x" * 200_000, "headers": {"Content-Type": "text/plain"}}, ""),
        ("post", {"data": b"\xff\xfe=\xff", "headers": {"Content-Type": "text/plain"}}, ""),
    ],
)
async def test_malformed_callbacks_get_4xx_json_and_passthru_its_default_branch(
    env: Env, method: str, kwargs: dict[str, object], words: str
) -> None:
    client, _, _ = env
    for path in ("/exotel/connect", "/exotel/status"):
        r = await getattr(client, method)(path, **kwargs)
        assert 400 <= r.status < 500, (path, r.status)
        body = await r.json()
        assert words in body["error"]
    r = await getattr(client, method)("/exotel/passthru", **kwargs)
    assert r.status == 200  # Exotel's default branch: continue_status, never a 4xx
    body = await r.json()
    assert body["decision"] == "default" and words in body["error"]
    # and the service still answers everyone else
    assert (await client.get("/exotel/passthru?CallSid=CA-fine")).status == 200


async def test_wrong_method_and_path_are_json_4xx(env: Env) -> None:
    client, _, _ = env
    r = await client.put("/exotel/passthru")
    assert r.status == 405 and "error" in await r.json()
    r = await client.get("/nope")
    assert r.status == 404 and "error" in await r.json()


async def test_grace_wait_for_a_pending_utterance_that_escalates() -> None:
    router, _ = make_router(grace_ms=1000)
    router.on_score(score("CA7", 1, -0.9, scored_at_ms=now_ms()))
    router.on_observed_call_event(CallEvent(kind="stop", call_sid="CA7", occurred_at_ms=now_ms()))
    router.on_transcript(
        Transcript(
            call_sid="CA7",
            utterance_id="CA7-u2",
            utterance_index=2,
            is_final=True,
            text="this is useless",
            start_ms=0,
            end_ms=1,
            engine="fake",
            speech_end_at_ms=now_ms(),
            produced_at_ms=now_ms(),
            latency_ms=1.0,
        )
    )
    task = asyncio.create_task(router.passthru("CA7"))
    await asyncio.sleep(0.05)
    assert not task.done()
    router.on_score(score("CA7", 2, -0.9, scored_at_ms=now_ms()))
    result = await asyncio.wait_for(task, 1)
    assert result.status == 302 and 40 <= result.waited_ms < 500


async def test_grace_wait_is_bounded_and_skipped_when_the_stream_stopped_long_ago() -> None:
    router, _ = make_router(grace_ms=200)
    calm(router, "CA8")
    pending = Transcript(
        call_sid="CA8",
        utterance_id="CA8-u9",
        utterance_index=9,
        is_final=False,
        text="hel",
        start_ms=0,
        end_ms=1,
        engine="fake",
        speech_end_at_ms=0,
        produced_at_ms=0,
        latency_ms=0.0,
    )
    router.on_transcript(pending)
    router.on_observed_call_event(CallEvent(kind="stop", call_sid="CA8", occurred_at_ms=now_ms()))
    started = time.perf_counter()
    result = await router.passthru("CA8")
    elapsed = (time.perf_counter() - started) * 1000
    assert result.status == 200 and 150 <= elapsed < 350
    router2, _ = make_router(grace_ms=200)
    calm(router2, "CA9")
    router2.on_transcript(pending.model_copy(update={"call_sid": "CA9"}))
    router2.on_observed_call_event(
        CallEvent(kind="stop", call_sid="CA9", occurred_at_ms=now_ms() - 1000)
    )
    started = time.perf_counter()
    assert (await router2.passthru("CA9")).waited_ms == 0.0
    assert time.perf_counter() - started < 0.05


async def test_connect_answers_the_escalation_target(env: Env) -> None:
    client, router, sink = env
    router.on_decision_record(
        Decision(
            call_sid="CA10",
            decision="escalate",
            rule_id="human",
            reason="asked for a human",
            target_group="support",
            decided_at_ms=1,
            latency_ms=1.0,
            evidence=[Evidence(utterance_id="u1", text="let me talk to a human")],
        )
    )
    r = await client.get(
        "/exotel/connect",
        params={"CallSid": "CA10", "CallFrom": "0981"},
        headers={"Exotel-Version": "1.0"},
    )
    assert r.status == 200
    body = await r.json()
    assert body["destination"] == {"numbers": ["+918000000001", "+918000000002"]}
    assert body["parallel_ringing"] == {"activate": True, "max_parallel_attempts": 2}
    assert body["max_ringing_duration"] == 45 and body["record"] is True
    playback = body["start_call_playback"]
    assert playback["type"] == "text" and "asked for a human" in playback["value"]
    assert "talk to a human" in playback["value"]
    assert sink.call_events[-1].kind == "connect" and sink.call_events[-1].answer == "support"
    escalate(router, "CA11")  # rolling rule -> trunk group
    body = await (await client.get("/exotel/connect?CallSid=CA11")).json()
    assert body["destination"] == {"trunk": "trunk-2134"} and "parallel_ringing" not in body
    body = await (await client.get("/exotel/connect?CallSid=CA-not-escalated")).json()
    assert body["destination"]["numbers"][0] == "+918000000001"  # first group


async def test_connect_without_agent_groups_is_404_json() -> None:
    router, _ = make_router(RulesFile())
    async with TestClient(TestServer(create_app(router))) as client:
        r = await client.get("/exotel/connect?CallSid=CA")
        assert r.status == 404 and "agent group" in (await r.json())["error"]


async def test_status_callback_is_recorded(env: Env) -> None:
    client, _, sink = env
    r = await client.post(
        "/exotel/status",
        data={
            "CallSid": "CA12",
            "Status": "completed",
            "RecordingUrl": "https://r",
            "EventType": "terminal",
            "ConversationDuration": "42",
        },
    )
    assert r.status == 200
    r = await client.get("/exotel/status?CallSid=CA12&Status=no-answer")
    assert r.status == 200
    events = [e for e in sink.call_events if e.kind == "status"]
    assert [e.params["Status"] for e in events] == ["completed", "no-answer"]
    assert events[0].params["ConversationDuration"] == "42"


async def test_health_ready_metrics() -> None:
    router, _ = make_router()
    router.ready = False
    async with TestClient(TestServer(create_app(router))) as client:
        assert (await client.get("/health")).status == 200
        assert (await client.get("/ready")).status == 503
        router.ready = True
        assert (await client.get("/ready")).status == 200
        escalate(router, "CA13")
        await client.get("/exotel/passthru?CallSid=CA13")
        text = await (await client.get("/metrics")).text()
        assert (
            'agentstream_routing_callbacks_total{answer="escalate",endpoint="passthru"} 1.0' in text
        )
        assert "agentstream_routing_callback_seconds_bucket" in text
        assert "agentstream_routing_score_to_decision_seconds_count 2.0" in text
