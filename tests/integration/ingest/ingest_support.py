"""Helpers for the ingest integration tests: Exotel message builders, a running server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from agentstream.stack.topics import create_topics
from ingest.server import IngestServer
from ingest.settings import IngestSettings
from schemas.records import AudioFrameMeta, CallEvent, DeadLetter
from schemas.topics import AUDIO, CALLS, DEADLETTER, prefixed
from tests.helpers import read_topic


def msg(data: dict[str, Any]) -> str:
    return orjson.dumps(data).decode()


def connected() -> str:
    return msg({"event": "connected"})


def start(
    call_sid: str,
    stream_sid: str,
    seq: int | str = 1,
    custom: dict[str, str] | None = None,
    rate: int | str | None = 8000,
    stream_key: str = "stream_sid",
) -> str:
    info: dict[str, Any] = {
        "stream_sid": stream_sid,
        "call_sid": call_sid,
        "account_sid": "AC1",
        "from": "+919800000001",
        "to": "+918000000002",
        "custom_parameters": custom or {},
    }
    if rate is not None:
        info["media_format"] = {"encoding": "raw", "sample_rate": rate, "bit_rate": "128kbps"}
    return msg({"event": "start", "sequence_number": seq, stream_key: stream_sid, "start": info})


def pcm(n_bytes: int, fill: int) -> bytes:
    return bytes((fill + i) % 256 for i in range(n_bytes))


def media(stream_sid: str, seq: int | str, chunk: int | str, ts: int | str, audio: bytes) -> str:
    payload = base64.b64encode(audio).decode()
    return msg(
        {
            "event": "media",
            "sequence_number": seq,
            "stream_sid": stream_sid,
            "media": {"chunk": chunk, "timestamp": ts, "payload": payload},
        }
    )


def dtmf(stream_sid: str, seq: int, digit: str, duration: int | str = 250) -> str:
    return msg(
        {
            "event": "dtmf",
            "sequence_number": seq,
            "stream_sid": stream_sid,
            "dtmf": {"digit": digit, "duration": duration},
        }
    )


def mark(stream_sid: str, seq: int, name: str) -> str:
    return msg(
        {"event": "mark", "sequence_number": seq, "stream_sid": stream_sid, "mark": {"name": name}}
    )


def stop(call_sid: str, stream_sid: str, seq: int, reason: str = "callended") -> str:
    return msg(
        {
            "event": "stop",
            "sequence_number": seq,
            "stream_sid": stream_sid,
            "stop": {"call_sid": call_sid, "account_sid": "AC1", "reason": reason},
        }
    )


def settings_for(bootstrap: str, prefix: str, **overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "topic_prefix": prefix,
        "host": "127.0.0.1",
        "port": 0,
        "linger_ms": 2,
        **overrides,
    }
    return IngestSettings(**values)


@contextlib.asynccontextmanager
async def running_server(
    bootstrap: str, prefix: str, create: bool = True, **overrides: Any
) -> AsyncIterator[IngestServer]:
    if create:
        await asyncio.to_thread(create_topics, bootstrap, prefix)
    server = IngestServer(settings_for(bootstrap, prefix, **overrides))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def read(bootstrap: str, topic: str, expected: int, timeout: float = 10.0) -> list[Any]:
    return await asyncio.to_thread(read_topic, bootstrap, topic, expected, timeout)


async def read_calls(bootstrap: str, prefix: str, expected: int) -> list[CallEvent]:
    records = await read(bootstrap, prefixed(CALLS, prefix), expected)
    return [CallEvent.model_validate(orjson.loads(r.value)) for r in records]


async def read_audio(
    bootstrap: str, prefix: str, expected: int, timeout: float = 10.0
) -> list[tuple[bytes, bytes, AudioFrameMeta]]:
    records = await read(bootstrap, prefixed(AUDIO, prefix), expected, timeout)
    return [(r.key, r.value, AudioFrameMeta.from_headers(r.headers)) for r in records]


async def read_deadletters(bootstrap: str, prefix: str, expected: int) -> list[DeadLetter]:
    records = await read(bootstrap, prefixed(DEADLETTER, prefix), expected)
    return [DeadLetter.model_validate(orjson.loads(r.value)) for r in records]


def ws_url(server: IngestServer, path: str = "/stream") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"
