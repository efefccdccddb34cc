"""Rules file limits: Connect fields Exotel accepts, line numbers for every violation (YAML and
TOML), and files that must not crash a reload (non-UTF-8, deep nesting, alias bombs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from routing.connect import connect_answer
from routing.service import RoutingService
from routing.settings import RoutingSettings
from schemas.rules import RulesError, parse_rules, parse_rules_toml, parse_rules_yaml
from schemas.tomllines import toml_line

pytestmark = pytest.mark.unit

SIX = ["+911", "+912", "+913", "+914", "+915", "+916"]


def group_yaml(**fields: object) -> str:
    """One agent group 'g' of two numbers; ``fields`` from line 5 on, one a line."""
    lines = [f"    {key}: {value}" for key, value in fields.items()]
    return "\n".join(
        ["version: 1", "agent_groups:", "  g:", '    numbers: ["+911", "+912"]', *lines]
    )


def test_connect_fields_exotel_accepts() -> None:
    rules = parse_rules_yaml(group_yaml(music_on_hold="default_tone", playback_to="both"))
    group = rules.agent_groups["g"]
    answer = connect_answer(group, None).model_dump(exclude_none=True)
    assert answer["music_on_hold"] == {"type": "default_tone"}
    assert answer["start_call_playback"]["playback_to"] == "both"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (group_yaml(playback_to="caller"), "playback_to"),
        (group_yaml(music_on_hold="jazz"), "music_on_hold"),
        (group_yaml(max_parallel_attempts=6), "max_parallel_attempts"),
        (
            f"version: 1\nagent_groups:\n  g:\n    numbers: {SIX!r}\n    parallel: true\n".replace(
                "'", '"'
            ),
            "at most 5 numbers",
        ),
    ],
)
def test_connect_violations_name_the_line(text: str, words: str) -> None:
    with pytest.raises(RulesError, match=rf"<rules>:5: .*{words}"):
        parse_rules(text)


TOML = """version = 1

[agent_groups.g]
numbers = ["+911"]
playback_to = "caller"

[[default.rules]]
id = "a"
kind = "keyword"
categories = ["x"]
target = "g"

[[default.rules]]
id = "b"
kind = "sentiment_single"
threshold = 5
target = "g"
"""


def test_toml_errors_name_the_line() -> None:
    with pytest.raises(RulesError) as info:
        parse_rules_toml(TOML, "rules.toml")
    message = str(info.value)
    assert "rules.toml:5: agent_groups.g.playback_to" in message
    assert "rules.toml:16: default.rules.1.sentiment_single.threshold" in message
    fixed = TOML.replace('playback_to = "caller"', "").replace("threshold = 5", "threshold = 0")
    with pytest.raises(RulesError, match=r"rules.toml:10: default.rules.0.categories"):
        parse_rules_toml(fixed, "rules.toml")


def test_toml_line_locator() -> None:
    text = 'a = 1\n[t]\n"quoted.key" = 2\nx.y = 3\n[[arr]]\nk = 1\n[[arr]]\nk = 2\n'
    assert toml_line(text, ("a",)) == 1
    assert toml_line(text, ("t", "quoted.key")) == 3
    assert toml_line(text, ("t", "x", "y")) == 4
    assert toml_line(text, ("arr", 1, "k")) == 8
    assert toml_line(text, ("arr", 1, "missing")) == 7
    assert toml_line(text, ("nope",)) is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a: " + "[" * 5000 + "]" * 5000, "nested"),
        ("a: " + "{b: " * 40 + "1" + "}" * 40, "nested deeper"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                for p, c in zip("abcdefg", "bcdefgh", strict=True)
            ),
            "aliases",
        ),
        ("x" * (1024 * 1024 + 1), "larger than"),
    ],
)
def test_hostile_yaml_is_a_rules_error(text: str, words: str) -> None:
    with pytest.raises(RulesError, match=words):
        parse_rules_yaml(text)


def test_deep_toml_is_a_rules_error() -> None:
    with pytest.raises(RulesError):
        parse_rules_toml("a = " + "[" * 5000 + "]" * 5000)


GOOD = "version: 1\nagent_groups:\n  support: {numbers: ['+911']}\n"


@pytest.mark.parametrize(
    "data",
    [
        GOOD.encode() + b"# caf\xe9 in latin-1\n",
        b"a: " + b"[" * 5000 + b"]" * 5000,
        b"version: 1\n" + b"a: " + b"{b: " * 40 + b"1" + b"}" * 40,
        b"\x00\x01\x02",
    ],
)
def test_reload_keeps_the_old_rules(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD)
    service = RoutingService(RoutingSettings(rules_path=path, port=0))
    before = service.router.rules
    path.write_bytes(data)
    os.utime(path, ns=(1, 1))
    assert not service.reload_rules()
    assert service.router.rules is before


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(GOOD.encode() + b"# caf\xe9\n")
    service_error = None
    try:
        RoutingService(RoutingSettings(rules_path=path, port=0))
    except RulesError as exc:
        service_error = str(exc)
    assert service_error is not None and "rules.yaml:4: not UTF-8" in service_error
