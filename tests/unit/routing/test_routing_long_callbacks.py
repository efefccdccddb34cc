"""Callbacks past aiohttp's own 8 KiB request-line limit still get Exotel's answers (200/302),
and a Passthru answered while routing is still rebuilding says it was not complete."""

from __future__ import annotations

import aiohttp
import pytest

from routing.http import start_http_app
from routing.router import ListPublisher, Router
from tests.unit.routing.routing_fakes import rules_with

pytestmark = pytest.mark.unit

RULES = rules_with({"id": "zero", "kind": "dtmf", "digits": ["0"], "target": "legal"})


async def _get(router: Router, params: dict[str, str]) -> tuple[int, dict[str, object]]:
    runner, port = await start_http_app(router, "127.0.0.1", 0)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{port}/exotel/passthru", params=params, allow_redirects=False
            ) as response,
        ):
            return response.status, await response.json()
    finally:
        await runner.cleanup()


async def test_too_many_parameters_in_a_long_query_get_the_default_branch() -> None:
    router = Router(RULES, ListPublisher())
    router.ready = True
    params = {"CallSid": "CA1", **{f"k{n}": "v" * 40 for n in range(300)}}  # ~15 KB query
    status, body = await _get(router, params)
    assert status in (200, 302)
    assert body["decision"] == "default"


async def test_a_passthru_during_the_rebuild_is_answered_incomplete() -> None:
    router = Router(RULES, ListPublisher())
    router.ready = False  # still reading its history
    status, body = await _get(router, {"CallSid": "CA2"})
    assert status in (200, 302)
    assert body["complete"] is False
