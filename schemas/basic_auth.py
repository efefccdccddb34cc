"""HTTP Basic auth as Exotel sends it (``https://KEY:TOKEN@host/...``): parsing the configured
``KEY:TOKEN[,KEY2:TOKEN2]`` pairs and checking an ``Authorization`` header. Pure, no I/O."""

from __future__ import annotations

import base64
import binascii
import hmac


def parse_credentials(pairs: str | None) -> dict[str, str]:
    """``KEY:TOKEN[,KEY2:TOKEN2]`` -> {key: token}; empty when unset. Raises ValueError."""
    if not pairs:
        return {}
    out: dict[str, str] = {}
    for pair in pairs.split(","):
        key, sep, token = pair.strip().partition(":")
        if not sep or not key:
            raise ValueError("basic auth must be 'KEY:TOKEN[,KEY2:TOKEN2]'")
        out[key] = token
    return out


def authorized(header: str | None, credentials: dict[str, str]) -> bool:
    """True if auth is off (no credentials) or ``header`` carries one of the pairs."""
    if not credentials:
        return True
    if header is None or not header.startswith("Basic "):
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    key, sep, token = decoded.partition(":")
    expected = credentials.get(key)
    if not sep or expected is None:
        return False
    return hmac.compare_digest(token.encode(), expected.encode())
