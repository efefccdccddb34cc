"""`agentstream up`: AGENTSTREAM_BASIC_AUTH, set once, configures ingest and routing."""

from __future__ import annotations

import pytest

from agentstream.commands.up import _auth_env

pytestmark = pytest.mark.unit

ALL = ["ingest", "worker", "routing"]


def test_shared_credentials_reach_both_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTSTREAM_INGEST_BASIC_AUTH", raising=False)
    monkeypatch.delenv("AGENTSTREAM_ROUTING_BASIC_AUTH", raising=False)
    monkeypatch.delenv("AGENTSTREAM_BASIC_AUTH", raising=False)
    assert _auth_env(ALL) == {}
    monkeypatch.setenv("AGENTSTREAM_BASIC_AUTH", "exotel:tok,ops:tok2")
    assert _auth_env(ALL) == {
        "AGENTSTREAM_INGEST_BASIC_AUTH": "exotel:tok,ops:tok2",
        "AGENTSTREAM_ROUTING_BASIC_AUTH": "exotel:tok,ops:tok2",
    }
    assert _auth_env(["routing"]) == {"AGENTSTREAM_ROUTING_BASIC_AUTH": "exotel:tok,ops:tok2"}
    # a service's own setting wins
    monkeypatch.setenv("AGENTSTREAM_ROUTING_BASIC_AUTH", "own:x")
    assert _auth_env(ALL) == {"AGENTSTREAM_INGEST_BASIC_AUTH": "exotel:tok,ops:tok2"}
    monkeypatch.setenv("AGENTSTREAM_BASIC_AUTH", "no-colon")
    with pytest.raises(ValueError, match="KEY:TOKEN"):
        _auth_env(ALL)
