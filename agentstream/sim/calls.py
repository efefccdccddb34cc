"""Exotel call simulator: plays audio files as concurrent Stream/Voicebot calls, then Passthru.

The engine behind ``agentstream simulate`` and ``bench/e2e.py``. For each call it does what
Exotel does: opens the WebSocket (Basic auth in the URL, custom parameters in the query),
sends ``connected``, ``start``, one ``media`` frame per 100 ms of audio paced at ``speed`` x real
time, ``stop``, closes the socket, and then calls the Passthru URL with the parameters Exotel
sends and records the answer (200 continue, 302 escalate). On ``/voicebot`` it also listens for
what the server sends back: a server-side close is the bot-to-agent handoff, and the call stops
streaming there. Message spellings rotate per call (:mod:`agentstream.sim.messages`).

What the pipeline made of each call (transcripts, scores, decisions) is read back from Kafka by
:class:`agentstream.sim.results.TopicWatcher`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import aiohttp
import orjson
import websockets
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agentstream.sim.audio import expand_inputs, frames
from agentstream.sim.channel import Channel, load_channel_pcm16
from agentstream.sim.messages import (
    Variant,
    connected_message,
    media_message,
    passthru_params,
    start_message,
    stop_message,
    variant_for,
)
from agentstream.sim.settings import SimulatorSettings

logger = logging.getLogger(__name__)

Endpoint = Literal["stream", "voicebot"]
FRAME_MS = 100


@dataclass(frozen=True)
class CallSpec:
    """One thing to play: an audio file, who the call belongs to, and what should happen.

    Immutable input (a scenario entry or an audio file); several :class:`CallRun` may play it.
    """

    name: str
    path: Path
    tenant: str = "default"
    campaign: str = "default"
    expected: str | None = None
    lines: tuple[str, ...] = ()


def load_scenarios(path: Path) -> list[CallSpec]:
    """Calls of a scenario file (``demo/scenarios.yaml``); audio is ``calls/<id>.wav`` beside it
    unless a call names its own ``audio`` path (relative to the file)."""
    spec = yaml.safe_load(path.read_text())
    if not isinstance(spec, dict) or not isinstance(spec.get("calls"), list):
        raise ValueError(f"{path}: expected a mapping with a 'calls' list")
    out: list[CallSpec] = []
    for call in spec["calls"]:
        audio = path.parent / str(call.get("audio", f"calls/{call['id']}.wav"))
        expect = call.get("expect") or {}
        out.append(
            CallSpec(
                name=str(call["id"]),
                path=audio,
                tenant=str(call.get("tenant", "default")),
                campaign=str(call.get("campaign", "default")),
                expected=expect.get("decision"),
                lines=tuple(str(line) for line in call.get("lines", ())),
            )
        )
    return out


def specs_from_inputs(
    inputs: list[Path], tenant: str = "default", campaign: str = "default"
) -> list[CallSpec]:
    """Files, directories and scenario files (``*.yaml``/``*.yml``) to call specs."""
    specs: list[CallSpec] = []
    for item in inputs:
        if item.suffix.lower() in (".yaml", ".yml"):
            specs.extend(load_scenarios(item))
        else:
            specs.extend(
                CallSpec(name=p.stem, path=p, tenant=tenant, campaign=campaign)
                for p in expand_inputs([item])
            )
    return specs


@dataclass
class SimOptions:
    """How to play a batch of calls: where to send them, how fast, how many at once."""

    ingest_url: str = "ws://127.0.0.1:8080"
    routing_url: str = "http://127.0.0.1:8081"
    basic_auth: str | None = None
    mode: Literal["stream", "voicebot", "mixed"] = "stream"
    speed: float = 1.0
    rates: tuple[int, ...] = (8000, 16000)
    concurrency: int = 0
    ramp_ms: float = 0.0
    passthru: bool = True
    passthru_delay_ms: float = 0.0
    wait_ready_s: float = 0.0  # > 0: wait (at most this) for routing's /ready before playing
    connect_timeout_s: float = 10.0
    account_sid: str = "simaccount"
    to_number: str = "08047112345"
    channel: Channel = "none"  # what the phone network does first (agentstream.sim.channel)

    @classmethod
    def from_settings(cls, settings: SimulatorSettings, **play: Any) -> SimOptions:
        """Options that send to the settings' ingest and routing URLs with their Basic auth;
        ``play`` sets the rest (mode, speed, rates, concurrency ...)."""
        secret = settings.basic_auth
        return cls(
            ingest_url=settings.ingest_url,
            routing_url=settings.routing_url,
            basic_auth=secret.get_secret_value() if secret else None,
            **{"wait_ready_s": settings.wait_ready_s, **play},
        )


@dataclass
class CallRun:
    """Live state and outcome of one simulated call (updated as it plays).

    Per-call state owned by the process that runs the :class:`Simulator` (``agentstream
    simulate``, ``bench/e2e.py`` or a test): the client's side of the call, as Exotel would see
    it. What the pipeline made of the call is in :class:`agentstream.sim.results.PipelineOutput`.
    """

    index: int
    spec: CallSpec
    endpoint: Endpoint
    variant: Variant
    call_sid: str
    stream_sid: str
    from_number: str
    status: str = "waiting"
    frames_sent: int = 0
    frames_total: int = 0
    audio_ms: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    handoff: bool = False
    close_code: int | None = None
    server_messages: list[str] = field(default_factory=list)
    passthru_status: int | None = None
    passthru_ms: float | None = None
    passthru_body: str = ""
    passthru_complete: bool | None = None  # the answer saw the call's whole analysis
    passthru_waited_ms: float | None = None
    error: str | None = None

    @property
    def passthru_decision(self) -> str | None:
        if self.passthru_status == 302:
            return "escalate"
        if self.passthru_status == 200:
            return "continue"
        return None


def plan_calls(specs: list[CallSpec], count: int, options: SimOptions) -> list[CallRun]:
    """``count`` calls cycling through ``specs``, each with its own SIDs and message variant."""
    if not specs:
        raise ValueError("nothing to play: no audio files or scenarios given")
    runs: list[CallRun] = []
    batch = uuid.uuid4().hex[:8]
    for index in range(count or len(specs)):
        spec = specs[index % len(specs)]
        if options.mode == "mixed":
            endpoint: Endpoint = "voicebot" if index % 2 else "stream"
        else:
            endpoint = options.mode
        runs.append(
            CallRun(
                index=index,
                spec=spec,
                endpoint=endpoint,
                variant=variant_for(index, options.rates),
                call_sid=f"sim{batch}{index:04d}",
                stream_sid=f"st{batch}{index:04d}",
                from_number=f"0998{index:06d}",
            )
        )
    return runs


def stream_url(options: SimOptions, run: CallRun, with_auth: bool = False) -> str:
    """The ws(s):// URL Exotel would open for this call, custom parameters in the query."""
    parts = urlsplit(options.ingest_url.rstrip("/"))
    query = {"tenant": run.spec.tenant, "campaign": run.spec.campaign}
    if run.variant.sample_rate_hz != 8000:
        query["sample-rate"] = str(run.variant.sample_rate_hz)
    netloc = parts.netloc
    if with_auth and options.basic_auth:
        key, _, token = options.basic_auth.partition(":")
        netloc = f"{quote(key, safe='')}:{quote(token, safe='')}@{netloc}"
    return urlunsplit((parts.scheme, netloc, f"{parts.path}/{run.endpoint}", urlencode(query), ""))


def basic_auth_header(basic_auth: str | None) -> dict[str, str]:
    if not basic_auth:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(basic_auth.encode()).decode("ascii")}


async def _listen(ws: ClientConnection, run: CallRun) -> None:
    """Voicebot: collect what the server sends; a close from its side is the handoff."""
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            run.server_messages.append(text[:200])


async def play_call(
    run: CallRun,
    options: SimOptions,
    pcm16: bytes,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Stream one call to ingest at ``options.speed`` x real time, then stop and close."""
    variant = run.variant
    chunks = list(frames(pcm16, variant.sample_rate_hz, FRAME_MS))
    run.frames_total = len(chunks)
    run.audio_ms = len(pcm16) * 1000 // (2 * variant.sample_rate_hz)
    run.status = "connecting"
    # Exotel is configured with wss://KEY:TOKEN@host/... and sends them as this header; we set
    # it ourselves because websockets does not percent-decode credentials in the URL.
    url = stream_url(options, run)
    custom = {"tenant": run.spec.tenant, "campaign": run.spec.campaign}
    try:
        async with connect(
            url,
            additional_headers=basic_auth_header(options.basic_auth),
            open_timeout=options.connect_timeout_s,
            max_size=2**20,
        ) as ws:
            run.started_at = time.time()
            listener = asyncio.create_task(_listen(ws, run))
            await ws.send(connected_message().decode())
            await ws.send(
                start_message(
                    variant,
                    stream_sid=run.stream_sid,
                    call_sid=run.call_sid,
                    account_sid=options.account_sid,
                    from_number=run.from_number,
                    to_number=options.to_number,
                    custom_parameters=custom,
                ).decode()
            )
            run.status = "streaming"
            t0 = clock()
            sequence = 1
            for n, chunk in enumerate(chunks):
                if options.speed > 0:
                    delay = t0 + n * FRAME_MS / 1000 / options.speed - clock()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if listener.done():
                    run.handoff = True
                    break
                sequence += 1
                try:
                    await ws.send(
                        media_message(
                            variant,
                            stream_sid=run.stream_sid,
                            sequence_number=sequence,
                            chunk=n + 1,
                            timestamp_ms=n * FRAME_MS,
                            pcm16=chunk,
                        ).decode()
                    )
                except ConnectionClosed:
                    run.handoff = True
                    break
                run.frames_sent = n + 1
            if not run.handoff:
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(
                        stop_message(
                            variant,
                            stream_sid=run.stream_sid,
                            sequence_number=sequence + 1,
                            call_sid=run.call_sid,
                            account_sid=options.account_sid,
                            reason="callended" if run.index % 2 else "stopped",
                        ).decode()
                    )
            await ws.close()
            run.close_code = ws.close_code
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        run.status = "handoff" if run.handoff else "stopped"
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
        run.status = "failed"
    finally:
        run.ended_at = time.time()


async def call_passthru(run: CallRun, options: SimOptions, session: aiohttp.ClientSession) -> None:
    """GET /exotel/passthru the way Exotel does after the stream applet; 302 means escalate."""
    if options.passthru_delay_ms:
        await asyncio.sleep(options.passthru_delay_ms / 1000)
    now = time.time()
    started = run.started_at or now
    params = passthru_params(
        run.variant,
        call_sid=run.call_sid,
        stream_sid=run.stream_sid,
        from_number=run.from_number,
        to_number=options.to_number,
        started_at_s=started,
        now_s=now,
        duration_s=round((run.ended_at or now) - started),
        disconnected_by="bot" if run.handoff else "user",
        stream_url=stream_url(options, run),
        custom_field=f"{run.spec.tenant}|{run.spec.campaign}",
    )
    url = options.routing_url.rstrip("/") + "/exotel/passthru"
    run.status = "passthru"
    t0 = time.perf_counter()
    try:
        async with session.get(
            url, params=params, headers=basic_auth_header(options.basic_auth), allow_redirects=False
        ) as response:
            body = await response.text()
            run.passthru_body = body[:200]
            run.passthru_status = response.status
            _read_completeness(run, body)
    except (aiohttp.ClientError, TimeoutError) as exc:
        run.error = f"passthru: {type(exc).__name__}: {exc}"
    run.passthru_ms = (time.perf_counter() - t0) * 1000
    run.status = f"done {run.passthru_status or '-'}"


def _read_completeness(run: CallRun, body: str) -> None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if isinstance(data, dict):
        complete, waited = data.get("complete"), data.get("waited_ms")
        run.passthru_complete = complete if isinstance(complete, bool) else None
        run.passthru_waited_ms = float(waited) if isinstance(waited, int | float) else None


async def wait_until_ready(
    session: aiohttp.ClientSession, routing_url: str, timeout_s: float
) -> float:
    """Poll routing's ``/ready`` until 200 (the pipeline can decide: routing's state rebuilt and
    live workers with their models loaded hold every audio partition); seconds waited."""
    url = routing_url.rstrip("/") + "/ready"
    started = time.monotonic()
    body = ""
    while time.monotonic() - started < timeout_s:
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return time.monotonic() - started
                body = (await response.text())[:300]
        except (aiohttp.ClientError, TimeoutError) as exc:
            body = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(0.25)
    raise TimeoutError(f"pipeline not ready after {timeout_s:.0f} s ({url}: {body})")


class Simulator:
    """Plays planned calls with bounded concurrency; each call streams and then calls Passthru."""

    def __init__(self, runs: list[CallRun], options: SimOptions) -> None:
        self.runs = runs
        self.options = options
        self._audio: dict[tuple[Path, int], bytes] = {}

    def audio(self, run: CallRun) -> bytes:
        key = (run.spec.path, run.variant.sample_rate_hz)
        if key not in self._audio:
            rate, channel = run.variant.sample_rate_hz, self.options.channel
            self._audio[key] = load_channel_pcm16(run.spec.path, rate, channel)
        return self._audio[key]

    async def run(self) -> list[CallRun]:
        for run in self.runs:  # read every file first: a missing file fails before any call
            self.audio(run)
        limit = asyncio.Semaphore(self.options.concurrency or len(self.runs))
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            if self.options.wait_ready_s > 0:
                await wait_until_ready(session, self.options.routing_url, self.options.wait_ready_s)

            async def one(run: CallRun) -> None:
                await asyncio.sleep(run.index * self.options.ramp_ms / 1000)
                async with limit:
                    await play_call(run, self.options, self.audio(run))
                if self.options.passthru and run.started_at is not None:
                    await call_passthru(run, self.options, session)

            await asyncio.gather(*(one(run) for run in self.runs))
        return self.runs


def describe(run: CallRun) -> dict[str, Any]:
    """The call's own outcome as plain data (results from Kafka are added by the caller)."""
    return {
        "call": run.spec.name,
        "call_sid": run.call_sid,
        "stream_sid": run.stream_sid,
        "endpoint": run.endpoint,
        "variant": run.variant.label(),
        "tenant": run.spec.tenant,
        "campaign": run.spec.campaign,
        "audio_ms": run.audio_ms,
        "frames_sent": run.frames_sent,
        "frames_total": run.frames_total,
        "handoff": run.handoff,
        "close_code": run.close_code,
        "passthru_status": run.passthru_status,
        "passthru_ms": None if run.passthru_ms is None else round(run.passthru_ms, 2),
        "passthru_decision": run.passthru_decision,
        "passthru_complete": run.passthru_complete,
        "passthru_waited_ms": run.passthru_waited_ms,
        "expected": run.spec.expected,
        "error": run.error,
    }
