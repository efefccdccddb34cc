"""The rules file: the shipped example validates; errors name the line; layering; TOML."""

from __future__ import annotations

import pytest

from schemas.rules import (
    KeywordRule,
    RulesError,
    default_rules,
    default_rules_text,
    parse_rules,
    parse_rules_yaml,
)

pytestmark = pytest.mark.unit

HEADER = "version: 1\nagent_groups:\n  a: {numbers: ['+911']}\n"


def test_shipped_rules_cover_the_seed_use_cases() -> None:
    rules = default_rules()
    categories = rules.resolve().categories
    for name in (
        "human_request",
        "legal_threat",
        "cancellation",
        "complaint",
        "payment_dispute",
        "medical_emergency",
    ):
        assert name in categories
    kinds = {r.kind for r in rules.default.rules}
    assert kinds == {
        "sentiment_rolling",
        "sentiment_single",
        "keyword",
        "dtmf",
        "silence",
        "repetition",
        "max_duration",
    }
    for tenant, campaign in (
        ("acme-finance", "collections"),
        ("shopnow", "deflection"),
        ("city-clinic", "appointments"),
        ("hirewell", "interview"),
    ):
        resolved = rules.resolve(tenant, campaign)
        assert resolved.redact_pii is True
        targets = {r.target for r in resolved.rules}
        assert targets <= set(rules.agent_groups)
        assert len(targets) > 1  # the campaign routes to its own agents
    assert rules.agent_groups["marketplace_agents"].trunk == "trunk-2134"
    emergency = rules.resolve("city-clinic", "appointments").rules[0]
    assert isinstance(emergency, KeywordRule) and emergency.target == "clinic_emergency"
    interview = rules.resolve("hirewell", "interview").rules
    assert "very-negative-utterance" not in {r.id for r in interview}


def test_shipped_text_round_trips() -> None:
    assert parse_rules_yaml(default_rules_text()) == default_rules()


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            HEADER + "default:\n  rules:\n    - id: x\n      kind: sentiment_rolling\n"
            "      threshold: -3\n      target: a\n",
            8,
            "greater than or equal to -1",
        ),
        (
            HEADER + "default:\n  rules:\n    - {id: x, kind: silence, seconds: 5, target: b}\n",
            6,
            "unknown agent group 'b'",
        ),
        (
            HEADER + "default:\n  rules:\n    - id: x\n      kind: keyword\n"
            "      categories: [nope]\n      target: a\n",
            8,
            "unknown keyword category",
        ),
        (HEADER + "default:\n  rules:\n    - {id: x, kind: teleport, target: a}\n", 6, "teleport"),
        (HEADER + "agent_groups: {}\n", 4, "duplicate key"),
        (HEADER + "  b: {numbers: ['1'], trunk: t}\n", 4, "exactly one"),
        (HEADER + "default:\n  rulez: []\n", 5, "Extra inputs"),
        (HEADER + "passthru: {escalate_status: 200}\n", 4, "must differ"),
        ("version: 1\nagent_groups: [1,\n", 3, "invalid YAML"),
        (HEADER + "default_agent_group: nobody\n", 4, "unknown agent group"),
    ],
)
def test_errors_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(RulesError) as info:
        parse_rules_yaml(text, "my.yaml")
    message = str(info.value)
    assert message.startswith(f"my.yaml:{line}:"), message
    assert words in message


def test_empty_file_is_valid_and_top_level_must_be_a_mapping() -> None:
    assert parse_rules_yaml("").resolve().rules == []
    with pytest.raises(RulesError, match="mapping"):
        parse_rules_yaml("- 1\n")


def test_toml_rules() -> None:
    text = """
version = 1
[agent_groups.a]
numbers = ["+911"]
[[default.rules]]
id = "x"
kind = "dtmf"
digits = ["0"]
target = "a"
"""
    rules = parse_rules(text, "r.toml")
    assert rules.resolve().rules[0].id == "x"
    with pytest.raises(RulesError, match="r.toml"):
        parse_rules("version = [", "r.toml")


def test_agent_group_fallbacks() -> None:
    rules = default_rules()
    assert rules.agent_group("recruiters")[0] == "recruiters"  # type: ignore[index]
    assert rules.agent_group(None)[0] == "support"  # type: ignore[index]
    assert rules.agent_group("gone")[0] == "support"  # type: ignore[index]
    assert parse_rules_yaml("").agent_group(None) is None
