"""Who may call routing's HTTP endpoints, and which calls each caller may read or steer.

:class:`RoutingAuth` is plain (no aiohttp): the allow-list, the Basic credentials
(:mod:`schemas.auth`, the same format and timing-safe check as ingest) and the tenants a
credential is bound to. :func:`auth_middleware` applies it to every request before a handler
runs; the handler then asks :meth:`Principal.may_access` with the call's tenant, which routing
learns from the call's ``start`` event on ``agentstream.calls``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from routing.settings import RoutingSettings
from schemas.auth import IpNetwork, basic_key, ip_in

logger = logging.getLogger(__name__)

PROBE_PATHS = frozenset({"/health", "/ready", "/metrics"})
PRINCIPAL_KEY = "agentstream.principal"
OPERATOR_PREFIXES = ("/dashboard",)  # every tenant's calls: not for tenant-bound credentials


@dataclass(frozen=True)
class Principal:
    """Who is calling: the credential key (None when auth is off) and its tenants (None: all)."""

    key: str | None
    tenants: frozenset[str] | None = None

    def may_access(self, tenant: str | None) -> bool:
        """Whether this caller may read or steer a call of ``tenant`` (None: tenant unknown)."""
        if self.tenants is None:
            return True
        return tenant is not None and tenant in self.tenants

    @property
    def bound(self) -> bool:
        return self.tenants is not None


@dataclass(frozen=True)
class Refusal:
    status: int  # 401 or 403
    reason: str  # metric label: "ip" | "auth"
    message: str


class RoutingAuth:
    """The allow-list and credentials of one routing instance (see module docstring)."""

    def __init__(
        self,
        credentials: Mapping[str, str] | None = None,
        networks: Iterable[IpNetwork] = (),
        tenants: Mapping[str, Iterable[str]] | None = None,
        proxies: Iterable[IpNetwork] = (),
        probes: bool = False,
    ) -> None:
        self.credentials = dict(credentials or {})
        self.networks = tuple(networks)
        self.tenants = {k: frozenset(v) for k, v in (tenants or {}).items()}
        self.proxies = tuple(proxies)
        self.probes = probes
        unknown = set(self.tenants) - set(self.credentials)
        if unknown:
            raise ValueError(f"auth_tenants names keys with no credential: {sorted(unknown)}")

    @classmethod
    def from_settings(cls, settings: RoutingSettings) -> RoutingAuth:
        return cls(
            settings.credentials(),
            settings.networks(),
            settings.auth_tenants,
            settings.proxies(),
            settings.auth_probes,
        )

    @property
    def enabled(self) -> bool:
        """False only when nothing is configured: no credential and no allow-list."""
        return bool(self.credentials or self.networks)

    def covers(self, path: str) -> bool:
        return self.probes or path not in PROBE_PATHS

    def client_address(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client's address: the peer, or for a trusted proxy the last untrusted hop."""
        if not self.proxies or not forwarded_for or not ip_in(peer, self.proxies):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",")[-16:] if hop.strip()]
        for hop in reversed(hops):
            if not ip_in(hop, self.proxies):
                return hop
        return hops[0] if hops else peer

    def check(
        self, peer: str | None, forwarded_for: str | None, authorization: str | None
    ) -> Principal | Refusal:
        """Who the caller is, or why it is refused."""
        if self.networks and not ip_in(self.client_address(peer, forwarded_for), self.networks):
            return Refusal(403, "ip", "address not allowed")
        if not self.credentials:
            return Principal(None)
        key = basic_key(authorization, self.credentials)
        if key is None:
            return Refusal(401, "auth", "missing or wrong credentials")
        return Principal(key, self.tenants.get(key))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN = Principal(None)


def principal(request: web.Request) -> Principal:
    """The caller :func:`auth_middleware` admitted (everyone, where auth does not apply)."""
    found = request.get(PRINCIPAL_KEY)
    return found if isinstance(found, Principal) else OPEN


def auth_middleware(
    auth: RoutingAuth, refused: Callable[[str, str, str | None], None]
) -> Middleware:
    """Refuse before the handler runs; ``refused(path, reason, peer)`` counts each refusal."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not auth.enabled or not auth.covers(request.path):
            return await handler(request)
        result = auth.check(
            request.remote,
            request.headers.get("X-Forwarded-For"),
            request.headers.get("Authorization"),
        )
        if isinstance(result, Refusal):
            refused(request.path, result.reason, request.remote)
            headers = {"WWW-Authenticate": 'Basic realm="agentstream"'}
            return web.Response(
                body=orjson.dumps({"error": result.message, "status": result.status}),
                status=result.status,
                content_type="application/json",
                headers=headers if result.status == 401 else None,
            )
        if result.bound and request.path.startswith(OPERATOR_PREFIXES):
            # The dashboard shows every tenant's calls: operators' (unbound) credentials only.
            refused(request.path, "tenant", request.remote)
            return web.Response(
                body=orjson.dumps({"error": "an operator credential is needed", "status": 403}),
                status=403,
                content_type="application/json",
            )
        request[PRINCIPAL_KEY] = result
        return await handler(request)

    return middleware


def warn_if_open(auth: RoutingAuth) -> None:
    """The loud warning at start when nothing protects the callbacks."""
    if not auth.enabled:
        logger.warning(
            "routing auth is OFF on /exotel/* and /dashboard: anyone who reaches this port can "
            "read and steer calls. Set AGENTSTREAM_ROUTING_BASIC_AUTH=KEY:TOKEN and/or "
            "AGENTSTREAM_ROUTING_ALLOW_IPS before exposing it (docs/security.md)"
        )
