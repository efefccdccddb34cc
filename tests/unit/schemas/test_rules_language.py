"""The rules file's ``language``: default < tenant < campaign; unset falls back to the worker."""

from __future__ import annotations

import pytest

from schemas.rules import RulesError, default_rules, parse_rules, parse_rules_yaml

pytestmark = pytest.mark.unit

LAYERED = """\
version: 1
default: {language: en}
tenants:
  bharat-bank:
    language: hi
    campaigns:
      collections: {language: auto}
      sales: {redact_pii: false}
  globex: {}
"""


def test_language_resolves_default_then_tenant_then_campaign() -> None:
    rules = parse_rules_yaml(LAYERED)
    assert rules.resolve().language == "en"
    assert rules.resolve("globex", "any").language == "en"  # inherits the default
    assert rules.resolve("bharat-bank").language == "hi"
    assert rules.resolve("bharat-bank", "sales").language == "hi"  # campaign without one
    assert rules.resolve("bharat-bank", "collections").language == "auto"
    assert rules.languages() == {"en", "hi", "auto"}


def test_language_unset_everywhere_is_none_the_worker_setting_applies() -> None:
    rules = parse_rules_yaml("version: 1\ntenants: {t: {campaigns: {c: {}}}}\n")
    assert rules.resolve("t", "c").language is None
    assert rules.languages() == set()
    assert default_rules().resolve().language is None  # the shipped file leaves it to the worker


def test_language_in_toml() -> None:
    text = 'version = 1\n[tenants.t]\nlanguage = "hi"\n[tenants.t.campaigns.c]\nlanguage = "en"\n'
    rules = parse_rules(text, "rules.toml")
    assert rules.resolve("t").language == "hi"
    assert rules.resolve("t", "c").language == "en"


@pytest.mark.parametrize("bad", ["Hindi", "EN", "e", "en-IN", "hin di"])
def test_a_malformed_language_names_its_line(bad: str) -> None:
    text = f"version: 1\ntenants:\n  t:\n    language: {bad!r}\n"
    with pytest.raises(RulesError, match=r"my\.yaml:4: tenants\.t\.language"):
        parse_rules_yaml(text, "my.yaml")
