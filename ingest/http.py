"""Plain HTTP on the WebSocket port and the handshake checks (auth, IP allow-list, capacity).

``GET /health``, ``GET /metrics`` and ``GET /exotel/stream-url`` are answered from the
websockets ``process_request`` hook, before any upgrade; ``/stream`` and ``/voicebot`` are
checked here (allow-list, Basic auth, concurrent-call limit) before a frame is read.
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
# Parameters Exotel itself adds to a dynamic-URL request: not custom parameters.
EXOTEL_CALL_PARAMS = frozenset(
    {
        "CallSid",
        "CallFrom",
        "CallTo",
        "From",
        "To",
        "Direction",
        "Created",
        "DialCallDuration",
        "StartTime",
        "EndTime",
        "CurrentTime",
        "CallType",
        "digits",
        "CustomField",
        "flow_id",
        "DialWhomNumber",
        "tenant_id",
        "ProcessStatus",
        "CallStatus",
        "ForwardedFrom",
        "EventType",
    }
)
CONTROL_PARAMS = frozenset({"sample-rate", "endpoint"})

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
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
        if not self._credentials:
            return True
        if header is None or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        key, sep, token = decoded.partition(":")
        expected = self._credentials.get(key)
        if not sep or expected is None:
            return False
        return hmac.compare_digest(token.encode(), expected.encode())

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

    def stream_url(self, request: Request, query: dict[str, str]) -> Response:
        """Answer ``{"url": "wss://..."}`` carrying tenant, campaign and custom parameters."""
        endpoint = query.get("endpoint", "stream")
        if endpoint not in ("stream", "voicebot"):
            return json_response(400, {"error": "endpoint must be 'stream' or 'voicebot'"})
        custom = {
            k: v
            for k, v in query.items()
            if k not in EXOTEL_CALL_PARAMS and k not in CONTROL_PARAMS
        }
        if len(custom) > MAX_CUSTOM_PARAMS:
            return json_response(
                400,
                {"error": f"Exotel carries at most {MAX_CUSTOM_PARAMS} custom parameters"},
            )
        params = dict(custom)
        if "sample-rate" in query:
            if query["sample-rate"] not in ("8000", "16000", "24000"):
                return json_response(400, {"error": "sample-rate must be 8000, 16000 or 24000"})
            params["sample-rate"] = query["sample-rate"]
        encoded = urlencode(params)
        if len(urlencode(custom)) > MAX_CUSTOM_CHARS:
            return json_response(
                400, {"error": f"custom parameters exceed {MAX_CUSTOM_CHARS} characters"}
            )
        base = self._base_url(request)
        scheme, _, rest = base.partition("://")
        if self._credentials:
            key, token = next(iter(self._credentials.items()))
            rest = f"{quote(key, safe='')}:{quote(token, safe='')}@{rest}"
        url = f"{scheme}://{rest.rstrip('/')}/{endpoint}"
        if encoded:
            url += "?" + encoded
        return json_response(200, {"url": url})

    def _base_url(self, request: Request) -> str:
        if self.settings.public_url:
            return self.settings.public_url
        host = request.headers.get("Host", f"127.0.0.1:{self.settings.port}")
        proto = request.headers.get("X-Forwarded-Proto", "")
        return f"{'wss' if proto == 'https' else 'ws'}://{host}"
