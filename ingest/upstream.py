"""The client socket to an upstream Voicebot: messages go to it unchanged, and come back.

What the bot sends (``media``, ``mark``, ``clear``) goes to Exotel verbatim. When the bot
closes its socket, ``on_bot_closed`` runs (the relay then closes the Exotel socket normally,
which is how a bot hangs up or transfers in Exotel).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

logger = logging.getLogger(__name__)


class UpstreamError(RuntimeError):
    """The upstream bot could not be reached."""


class UpstreamBot:
    """One upstream bot connection for one call; owned by the ingest process holding it."""

    def __init__(
        self,
        url: str,
        to_exotel: Callable[[str | bytes], Awaitable[None]],
        on_bot_closed: Callable[[], Awaitable[None]],
        open_timeout_s: float,
        max_size: int,
    ) -> None:
        self.url = url
        self._to_exotel = to_exotel
        self._on_bot_closed = on_bot_closed
        self._open_timeout_s = open_timeout_s
        self._max_size = max_size
        self._ws: ClientConnection | None = None
        self._pump: asyncio.Task[None] | None = None
        self._closing = False

    async def open(self, first: list[str]) -> None:
        try:
            self._ws = await connect(
                self.url,
                open_timeout=self._open_timeout_s,
                max_size=self._max_size,
                compression=None,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise UpstreamError(f"upstream bot {self.url!r} unreachable: {exc!r}") from exc
        for message in first:
            await self._ws.send(message)
        self._pump = asyncio.get_running_loop().create_task(self._relay_back())

    async def send(self, message: str | bytes) -> None:
        if self._ws is None:
            return
        try:
            await self._ws.send(message)
        except ConnectionClosed:
            logger.info("upstream bot %s closed; dropping a message to it", self.url)

    async def _relay_back(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                await self._to_exotel(message)
        except ConnectionClosed:
            pass
        if not self._closing:
            await self._on_bot_closed()

    async def close(self, reason: str = "") -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close(1000, reason)
        if self._pump is not None and self._pump is not asyncio.current_task():
            try:
                await asyncio.wait_for(self._pump, 5.0)
            except (TimeoutError, ConnectionClosed):
                self._pump.cancel()
