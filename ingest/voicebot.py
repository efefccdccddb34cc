"""Voicebot proxy: relay an Exotel ``/voicebot`` socket to its tenant's upstream bot.

Messages Exotel sends before ``start`` (``connected``) are held until the tenant (and with it
the upstream URL) is known, then sent ahead of ``start``: at most ``MAX_HELD_MESSAGES`` /
``MAX_HELD_BYTES``, later ones are dropped and counted. Afterwards every message (``clear``
from Exotel included) is forwarded unchanged. With no upstream configured, ``/voicebot``
behaves like ``/stream``.
"""

from __future__ import annotations

import logging

from ingest.live import CLOSE_INTERNAL, CLOSE_NORMAL, LiveCalls, LiveConnection
from ingest.metrics import IngestStats
from ingest.settings import IngestSettings
from ingest.upstream import UpstreamBot, UpstreamError
from schemas.exotel import ExotelEvent, StartEvent, UnknownEvent

logger = logging.getLogger(__name__)

MAX_HELD_MESSAGES = 16
MAX_HELD_BYTES = 64 * 1024


class VoicebotRelay:
    """Forwards each ``/voicebot`` message to the call's upstream bot, opening it at ``start``."""

    def __init__(self, settings: IngestSettings, live: LiveCalls, stats: IngestStats) -> None:
        self.settings = settings
        self.live = live
        self.stats = stats

    async def on_message(
        self, call: LiveConnection, raw: str | bytes, event: ExotelEvent | UnknownEvent | None
    ) -> None:
        session = call.session
        if isinstance(event, StartEvent):
            if session.call_sid is not None:
                self.live.by_sid[session.call_sid] = call
            url = self.settings.upstream_for(session.tenant)
            if url is None:
                return
            bot = UpstreamBot(
                url,
                call.ws.send,
                lambda: self._bot_closed(call),
                self.settings.upstream_open_timeout_s,
                self.settings.max_message_bytes,
            )
            try:
                await bot.open([*call.held, str(raw)])
            except UpstreamError as exc:
                logger.error("call_sid=%s %s", session.call_sid, exc)
                call.close(CLOSE_INTERNAL, "upstream bot unavailable", "upstream_error")
                return
            call.upstream = bot
            call.held.clear()
        elif call.upstream is not None:
            await call.upstream.send(raw)
        elif not session.started and isinstance(raw, str):
            held = call.held
            if len(held) < MAX_HELD_MESSAGES and sum(map(len, held)) + len(raw) <= MAX_HELD_BYTES:
                held.append(raw)
            else:
                self.stats.prestart_dropped += 1

    async def _bot_closed(self, call: LiveConnection) -> None:
        logger.info("call_sid=%s upstream bot closed: ending the stream", call.session.call_sid)
        call.close(CLOSE_NORMAL, "bot ended the stream", "bot_closed")
