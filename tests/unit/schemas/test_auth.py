"""schemas.auth: the credential format ingest and routing share, the Basic check, allow-lists."""

from __future__ import annotations

import base64

import pytest

from schemas.auth import basic_header, basic_key, ip_in, parse_credentials, parse_networks

pytestmark = pytest.mark.unit

CREDS = {"exotel": "s3cret", "ops": "t:with:colons"}


def test_parse_credentials() -> None:
    assert parse_credentials("a:b, c:d:e") == {"a": "b", "c": "d:e"}
    for bad in ("", "nocolon", ":token", "key:", "a:b,,c:d"):
        with pytest.raises(ValueError, match="KEY:TOKEN"):
            parse_credentials(bad)


@pytest.mark.parametrize(
    ("header", "key"),
    [
        (basic_header("exotel", "s3cret"), "exotel"),
        (basic_header("ops", "t:with:colons"), "ops"),
        ("basic " + base64.b64encode(b"exotel:s3cret").decode(), "exotel"),
        (basic_header("exotel", "wrong"), None),
        (basic_header("ops", "s3cret"), None),  # a token of another key
        (basic_header("nobody", "s3cret"), None),
        (None, None),
        ("", None),
        ("Bearer s3cret", None),
        ("Basic !!!not-base64", None),
        ("Basic " + base64.b64encode(b"\xff\xfe:x").decode(), None),
        ("Basic " + base64.b64encode(b"exotel").decode(), None),
        ("Basic " + "A" * 10_000, None),
    ],
)
def test_basic_key(header: str | None, key: str | None) -> None:
    assert basic_key(header, CREDS) == key


def test_allow_list() -> None:
    nets = parse_networks(["10.0.0.0/8", " 2001:db8::/32", "192.168.1.7"])
    assert ip_in("10.1.2.3", nets) and ip_in("192.168.1.7", nets) and ip_in("2001:db8::1", nets)
    assert ip_in("::ffff:10.9.9.9", nets)  # an IPv4 peer seen on a dual-stack socket
    assert not ip_in("192.168.1.8", nets) and not ip_in(None, nets)
    assert not ip_in("not-an-ip", nets) and not ip_in("", nets)
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.0/33"])
