"""Basic auth and the IP allow-list are checked at the handshake, before any frame is read."""

from __future__ import annotations

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.integration.ingest.ingest_support import (
    media,
    pcm,
    read_audio,
    running_server,
    start,
    stop,
)

pytestmark = pytest.mark.integration


async def test_auth_refused_at_handshake(kafka_bootstrap: str, topic_prefix: str) -> None:
    async with running_server(
        kafka_bootstrap, topic_prefix, basic_auth="exokey:s3cret,other:tok", stream_url_scheme="ws"
    ) as server:
        host = f"127.0.0.1:{server.port}"
        for url in (
            f"ws://{host}/stream",
            f"ws://exokey:wrong@{host}/stream",
            f"ws://nobody:s3cret@{host}/voicebot",
        ):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url):
                    pass
            assert refused.value.response.status_code == 401
        assert server.stats.refused["auth"] == 3
        assert server.stats.calls_total == 0  # no session was ever created

        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{host}/exotel/stream-url?tenant=a") as resp:
                assert resp.status == 401
            auth = aiohttp.BasicAuth("other", "tok")
            async with http.get(f"http://{host}/exotel/stream-url?tenant=a", auth=auth) as resp:
                url = (await resp.json())["url"]
            own = aiohttp.BasicAuth("exokey", "s3cret")
            async with http.post(f"http://{host}/exotel/stream-url?tenant=a", auth=own) as resp:
                assert (await resp.json())["url"] == f"ws://exokey:s3cret@{host}/stream?tenant=a"
        assert url == f"ws://other:tok@{host}/stream?tenant=a"  # the caller's own credential

        async with connect(url) as ws:  # credentials in the URL become Authorization: Basic
            await ws.send(start("CA-A", "ST-A"))
            await ws.send(media("ST-A", 2, 1, 0, pcm(1600, 1)))
            await ws.send(stop("CA-A", "ST-A", 3))
            await ws.wait_closed()
            assert ws.close_code == 1000
    audio = await read_audio(kafka_bootstrap, topic_prefix, 1)
    assert audio[0][1] == pcm(1600, 1)


async def test_ip_allow_list(kafka_bootstrap: str, topic_prefix: str) -> None:
    async with running_server(kafka_bootstrap, topic_prefix, allow_ips="10.0.0.0/8") as server:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{server.port}/stream"):
                pass
        assert refused.value.response.status_code == 403
    async with running_server(
        kafka_bootstrap, topic_prefix, create=False, allow_ips="10.0.0.0/8, 127.0.0.1"
    ) as server:
        async with connect(f"ws://127.0.0.1:{server.port}/stream") as ws:
            await ws.send(start("CA-IP", "ST-IP"))
            await ws.send(stop("CA-IP", "ST-IP", 2))
            await ws.wait_closed()
            assert ws.close_code == 1000


async def test_capacity_limit(kafka_bootstrap: str, topic_prefix: str) -> None:
    async with running_server(kafka_bootstrap, topic_prefix, max_calls=1) as server:
        async with connect(f"ws://127.0.0.1:{server.port}/stream") as first:
            await first.send(start("CA-1", "ST-1"))
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"ws://127.0.0.1:{server.port}/stream"):
                    pass
            assert refused.value.response.status_code == 503
            assert server.stats.refused["capacity"] == 1
