"""Rules reload (file change or SIGHUP): new rules take effect, call state is kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from routing.service import RoutingService, RulesSource
from routing.settings import RoutingSettings
from schemas.rules import RulesError
from tests.unit.routing.routing_fakes import score

pytestmark = pytest.mark.unit

RULES = """version: 1
agent_groups:
  support: {numbers: ["+911"]}
  vip: {numbers: ["+912"]}
default:
  categories:
    complaint: {phrases: [complaint]}
  rules:
    - {id: k, kind: keyword, categories: [complaint], target: support}
"""


def test_reload_swaps_rules_and_keeps_state(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    service = RoutingService(RoutingSettings(rules_path=path, port=0))
    router = service.router
    assert router.on_score(score("c1", 1, categories=("complaint",))).decision == "escalate"  # type: ignore[union-attr]
    assert not service.rules_source.changed()

    path.write_text(RULES.replace("target: support", "target: vip"))
    os.utime(path, ns=(1, 1))  # a different stamp even within the same mtime tick
    assert service.rules_source.changed()
    assert service.reload_rules()
    assert router.book.get("c1").escalation.target_group == "support"  # type: ignore[union-attr]
    assert router.on_score(score("c1", 2, categories=("complaint",))) is None  # still escalated
    assert router.on_score(score("c2", 1, categories=("complaint",))).target_group == "vip"  # type: ignore[union-attr]

    path.write_text("version: 1\ndefault:\n  rules: [{id: x, kind: nope}]\n")
    assert not service.reload_rules()  # logged, old rules kept
    assert router.on_score(score("c3", 1, categories=("complaint",))).target_group == "vip"  # type: ignore[union-attr]


def test_rules_source_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        RulesSource(tmp_path / "missing.yaml").load()
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\npassthru: {escalate_status: 404}\n")
    with pytest.raises(RulesError, match=r"bad.yaml:2:"):
        RulesSource(bad).load()
    assert RulesSource(None).load().agent_groups  # the shipped file
