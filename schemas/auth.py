"""HTTP Basic credentials and IP allow-lists, as every service configures and checks them.

Pure (strings in, answers out): the format ``KEY:TOKEN[,KEY2:TOKEN2]`` that
``AGENTSTREAM_INGEST_BASIC_AUTH`` and ``AGENTSTREAM_ROUTING_BASIC_AUTH`` share, the
timing-safe check of an ``Authorization: Basic`` header against it (Exotel sends credentials
written into a URL, ``https://KEY:TOKEN@host/...``, as that header), and the IP/CIDR allow-list.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Iterable, Mapping

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_HEADER_CHARS = 4096


def parse_credentials(text: str) -> dict[str, str]:
    """``'KEY:TOKEN[,KEY2:TOKEN2]'`` -> ``{KEY: TOKEN}``; raises ValueError on a bad pair."""
    pairs: dict[str, str] = {}
    for pair in text.split(","):
        key, sep, token = pair.strip().partition(":")
        if not sep or not key or not token:
            raise ValueError("credentials must be 'KEY:TOKEN[,KEY2:TOKEN2]' (non-empty KEY, TOKEN)")
        pairs[key] = token
    return pairs


def basic_key(header: str | None, credentials: Mapping[str, str]) -> str | None:
    """The KEY of the configured pair ``header`` carries, else None.

    Every configured pair is compared, each with :func:`hmac.compare_digest`, so the time taken
    does not say which key exists or how much of a token matched.
    """
    if header is None or len(header) > MAX_HEADER_CHARS:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    key, sep, token = decoded.partition(":")
    if not sep:
        return None
    found: str | None = None
    for known_key, known_token in credentials.items():
        same_key = hmac.compare_digest(key.encode(), known_key.encode())
        same_token = hmac.compare_digest(token.encode(), known_token.encode())
        if same_key and same_token:
            found = known_key
    return found


def basic_header(key: str, token: str) -> str:
    """The ``Authorization`` header value for ``key:token`` (clients, tests)."""
    return "Basic " + base64.b64encode(f"{key}:{token}".encode()).decode("ascii")


def parse_networks(items: Iterable[str]) -> tuple[IpNetwork, ...]:
    """IPs and CIDRs (``10.0.0.0/8``, ``2001:db8::1``); raises ValueError on a bad one."""
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip())


def ip_in(remote: str | None, networks: Iterable[IpNetwork]) -> bool:
    """Whether the address ``remote`` lies in one of ``networks`` (False when unreadable)."""
    if remote is None:
        return False
    try:
        address = ipaddress.ip_address(remote.strip())
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return any(address in net for net in networks)
