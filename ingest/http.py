"""Plain HTTP on the WebSocket port and the handshake checks (auth, IP allow-list, capacity).

``GET /health``, ``GET /metrics`` and ``GET``/``POST /exotel/stream-url`` are answered from
the websockets ``process_request`` hook, before any upgrade (POST: :mod:`ingest.http_post`);
``/stream`` and ``/voicebot`` are checked here (allow-list, Basic auth, concurrent-call
limit) before a frame is read.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from ingest.settings import IngestSettings, IpNetwork

logger = logging.getLogger(__name__)

WS_PATHS = ("/stream", "/voicebot")
MAX_CUSTOM_PARAMS = 3
MAX_CUSTOM_CHARS = 256
# Forwarded into the wss URL by /exotel/stream-url besides IngestSettings.stream_url_params;
# everything else (Exotel's CallSid, CallFrom, passthru, ...) is dropped.
FORWARDED_PARAMS = ("tenant", "campaign")

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


def json_response(status: int, body: Any, extra: list[tuple[str, str]] | None = None) -> Response:
    data = orjson.dumps(body)
    headers = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Connection", "close"),
            *(extra or []),
        ]
    )
    return Response(status, _REASONS.get(status, "Error"), headers, data)


def bytes_response(status: int, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    return Response(status, _REASONS.get(status, "Error"), headers, body)


def split_path(path: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(path)
    return parts.path.rstrip("/") or "/", dict(parse_qsl(parts.query, keep_blank_values=True))


class Gate:
    """Auth, allow-list and the dynamic stream URL (pure: no sockets)."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self._credentials = settings.credentials()
        self._networks: tuple[IpNetwork, ...] = settings.networks()

    @property
    def auth_enabled(self) -> bool:
        return bool(self._credentials)

    def ip_allowed(self, remote: str | None) -> bool:
        if not self._networks:
            return True
        if remote is None:
            return False
        try:
            address = ipaddress.ip_address(remote)
        except ValueError:
            return False
        return any(address in net for net in self._networks)

    def authorized(self, header: str | None) -> bool:
        """True if auth is off or ``header`` carries one of the configured KEY:TOKEN pairs."""
        return not self._credentials or self.identify(header) is not None

    def identify(self, header: str | None) -> str | None:
        """The configured key whose KEY:TOKEN ``header`` carries (timing-safe), else None."""
        if header is None or not header.startswith("Basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        key, sep, token = decoded.partition(":")
        expected = self._credentials.get(key)
        if not sep or expected is None:
            return None
        return key if hmac.compare_digest(token.encode(), expected.encode()) else None

    def check(
        self, remote: str | None, authorization: str | None, refuse: Callable[[str], None]
    ) -> Response | None:
        """None when the peer may go on; else the HTTP answer that refuses it."""
        if not self.ip_allowed(remote):
            refuse("ip")
            logger.warning("refused %s: not in the IP allow-list", remote)
            return json_response(403, {"error": "address not allowed"})
        if not self.authorized(authorization):
            refuse("auth")
            logger.warning("refused %s: missing or wrong Basic auth", remote)
            return json_response(
                401,
                {"error": "missing or wrong credentials"},
                [("WWW-Authenticate", 'Basic realm="agentstream"')],
            )
        return None

    def stream_url(
        self, request: Request, query: dict[str, str], authorization: str | None = None
    ) -> Response:
        """Answer ``{"url": "wss://..."}`` for Exotel's fetch (GET or POST).

        Only the operator's parameters go into the URL (``tenant``, ``campaign`` and
        ``stream_url_params``); Exotel's own (``CallSid``, ``passthru``, ...) are dropped, so
        they never cause a 4xx. With auth on, the URL carries the caller's own credential.
        """
        endpoint = query.get("endpoint", "stream")
        if endpoint not in ("stream", "voicebot"):
            return json_response(400, {"error": "endpoint must be 'stream' or 'voicebot'"})
        allowed = (*FORWARDED_PARAMS, *self.settings.stream_url_params)
        custom = {k: query[k] for k in allowed if k in query}
        if len(custom) > MAX_CUSTOM_PARAMS:
            return json_response(
                400,
                {"error": f"Exotel carries at most {MAX_CUSTOM_PARAMS} custom parameters"},
            )
        if len(urlencode(custom)) > MAX_CUSTOM_CHARS:
            return json_response(
                400, {"error": f"custom parameters exceed {MAX_CUSTOM_CHARS} characters"}
            )
        params = dict(custom)
        if "sample-rate" in query:
            if query["sample-rate"] not in ("8000", "16000", "24000"):
                return json_response(400, {"error": "sample-rate must be 8000, 16000 or 24000"})
            params["sample-rate"] = query["sample-rate"]
        encoded = urlencode(params)
        scheme, _, rest = self._base_url(request).partition("://")
        key = self.identify(authorization) if self._credentials else None
        if key is not None:
            token = self._credentials[key]
            rest = f"{quote(key, safe='')}:{quote(token, safe='')}@{rest}"
        url = f"{scheme}://{rest.rstrip('/')}/{endpoint}"
        if encoded:
            url += "?" + encoded
        return json_response(200, {"url": url})

    def _base_url(self, request: Request) -> str:
        public = self.settings.public_url
        if public:
            scheme, sep, rest = public.partition("://")
            if sep and scheme in ("http", "https"):
                return f"{'wss' if scheme == 'https' else 'ws'}://{rest}"
            return public
        host = request.headers.get("Host", f"127.0.0.1:{self.settings.port}")
        return f"{self.settings.stream_url_scheme}://{host}"
