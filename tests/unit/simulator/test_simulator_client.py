"""The simulator's client side against a small recording server (real sockets, no broker).

The server parses every message with the same ``schemas.exotel`` models as ingest, so these
tests show that every variant the simulator rotates through is valid Exotel, that audio arrives
complete and in order at the announced rate, that Basic auth travels as a header, and that the
Passthru request carries Exotel's parameters in both stream-block forms.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

from agentstream.sim.audio import frames, load_pcm16
from agentstream.sim.calls import (
    CallSpec,
    SimOptions,
    Simulator,
    load_scenarios,
    plan_calls,
    specs_from_inputs,
)
from agentstream.sim.messages import variant_for
from schemas.callbacks import parse_callback
from schemas.exotel import MediaEvent, StartEvent, StopEvent, parse_event

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def test_variants_cover_every_spelling_in_two_calls() -> None:
    first, second = variant_for(0), variant_for(1)
    for name in ("numbers_as_strings", "sid_key", "encoding", "sample_rate_hz", "passthru_form"):
        assert getattr(first, name) != getattr(second, name)
    assert len({variant_for(i) for i in range(100)}) == 32


def test_frames_are_100ms_and_complete(tmp_path: Path) -> None:
    tone = 0.3 * np.sin(np.arange(8000 * 2 + 123) / 8.0)
    path = tmp_path / "t.flac"
    sf.write(path, tone, 8000, subtype="PCM_16")
    pcm8 = load_pcm16(path, 8000)
    pcm16 = load_pcm16(path, 16000)
    assert len(pcm8) == (8000 * 2 + 123) * 2
    assert abs(len(pcm16) - 2 * len(pcm8)) <= 4
    chunks = list(frames(pcm8, 8000))
    assert [len(c) for c in chunks[:-1]] == [1600] * 20
    assert b"".join(chunks) == pcm8


def test_demo_scenarios_have_audio_and_expectations() -> None:
    specs = load_scenarios(ROOT / "demo" / "scenarios.yaml")
    assert len(specs) >= 8
    assert {s.expected for s in specs} == {"continue", "escalate"}
    for spec in specs:
        info = sf.info(str(spec.path))
        assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
        assert info.duration < 15
        assert spec.lines and spec.tenant != "default"


class Recorder:
    """A minimal Exotel peer: records parsed events per path, answers Passthru from a table."""

    def __init__(self, escalated: set[str]) -> None:
        self.calls: dict[str, dict[str, Any]] = {}
        self.passthru: list[dict[str, str]] = []
        self.escalated = escalated

    async def ws_handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        call: dict[str, Any] = {
            "path": ws.request.path,
            "auth": ws.request.headers.get("Authorization"),
            "events": [],
        }
        async for message in ws:
            event = parse_event(message)
            call["events"].append(event)
            if isinstance(event, StartEvent):
                self.calls[event.start.call_sid] = call

    async def passthru_handler(self, request: web.Request) -> web.Response:
        params = parse_callback(dict(request.query))
        self.passthru.append(dict(request.query))
        status = 302 if params.call_sid in self.escalated else 200
        return web.Response(status=status, text="ok")


async def test_simulator_sends_valid_exotel_calls(tmp_path: Path) -> None:
    audio = tmp_path / "a.wav"
    sf.write(audio, 0.2 * np.sin(np.arange(8000 + 800) / 5.0), 8000, subtype="PCM_16")
    specs = [CallSpec("a", audio, tenant="acme", campaign="collections", expected="continue")]
    options = SimOptions(basic_auth="key:to:ken", speed=0, routing_url="")
    runs = plan_calls(specs, 4, options)
    recorder = Recorder(escalated={runs[1].call_sid})
    app = web.Application()
    app.router.add_get("/exotel/passthru", recorder.passthru_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    http_port = runner.addresses[0][1]
    async with serve(recorder.ws_handler, "127.0.0.1", 0) as server:
        ws_port = server.sockets[0].getsockname()[1]
        options.ingest_url = f"ws://127.0.0.1:{ws_port}"
        options.routing_url = f"http://127.0.0.1:{http_port}"
        await Simulator(runs, options).run()
    await runner.cleanup()

    expected_auth = "Basic " + base64.b64encode(b"key:to:ken").decode()
    for run in runs:
        assert run.error is None
        call = recorder.calls[run.call_sid]
        assert call["auth"] == expected_auth
        assert call["path"].startswith("/stream?") and "tenant=acme" in call["path"]
        events = call["events"]
        assert events[0].event == "connected"
        start, *media, stop = events[1:]
        assert isinstance(start, StartEvent) and isinstance(stop, StopEvent)
        rate = start.start.media_format.sample_rate_hz
        assert rate == run.variant.sample_rate_hz
        assert start.start.custom_parameters == {"tenant": "acme", "campaign": "collections"}
        assert all(isinstance(m, MediaEvent) for m in media)
        assert [m.sequence_number for m in media] == list(range(2, 2 + len(media)))
        pcm = b"".join(m.media.pcm16() for m in media)
        assert pcm == load_pcm16(audio, rate)
        assert stop.stream_sid == run.stream_sid
    assert [r.passthru_status for r in runs] == [200, 302, 200, 200]
    assert runs[1].passthru_decision == "escalate"
    forms = {("Stream" in q, "Stream[StreamSID]" in q) for q in recorder.passthru}
    assert forms == {(True, False), (False, True)}
    for query in recorder.passthru:
        parsed = parse_callback(query)
        assert parsed.stream.status == "completed"
        assert parsed.stream.stream_sid and parsed.digits == ""


def test_specs_from_directory(tmp_path: Path) -> None:
    for name in ("b.wav", "a.flac", "notes.txt"):
        path = tmp_path / name
        if name.endswith("txt"):
            path.write_text("x")
        else:
            sf.write(path, np.zeros(800), 8000)
    specs = specs_from_inputs([tmp_path], tenant="t")
    assert [s.name for s in specs] == ["a", "b"] and specs[0].tenant == "t"
