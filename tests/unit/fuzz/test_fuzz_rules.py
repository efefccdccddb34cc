"""Property-based fuzzing of the rules loader (schemas.rules): any text, bytes or tree ends in
rules or a RulesError that names the file, never another exception (reload keeps old rules)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing.connect import connect_answer
from schemas.callbacks import ConnectAnswer
from schemas.rules import (
    RulesError,
    RulesFile,
    decode_rules,
    default_rules_text,
    parse_rules_toml,
    parse_rules_yaml,
)

pytestmark = pytest.mark.unit

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
SHIPPED = default_rules_text()
SHIPPED_LINES = SHIPPED.splitlines()


def load_or_refuse(text: str, toml: bool = False) -> RulesFile | None:
    source = "rules.toml" if toml else "rules.yaml"
    try:
        return parse_rules_toml(text, source) if toml else parse_rules_yaml(text, source)
    except RulesError as exc:
        assert all(line.startswith(source) for line in str(exc).splitlines() if line), str(exc)
        return None


@FUZZ
@given(st.text(max_size=400))
def test_any_text_as_yaml(text: str) -> None:
    load_or_refuse(text)


@FUZZ
@given(st.text(max_size=400))
def test_any_text_as_toml(text: str) -> None:
    load_or_refuse(text, toml=True)


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes(data: bytes) -> None:
    try:
        text = decode_rules(data, "rules.yaml")
    except RulesError as exc:
        assert str(exc).startswith("rules.yaml:")
        return
    load_or_refuse(text)


@settings(FUZZ, max_examples=30)  # each example validates the whole shipped file
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=len(SHIPPED_LINES) - 1),
            st.sampled_from(["delete", "duplicate", "replace", "indent", "truncate"]),
            st.text(max_size=20),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_mutations_of_the_shipped_file(edits: list[tuple[int, str, str]]) -> None:
    lines = list(SHIPPED_LINES)
    for index, kind, text in edits:
        index %= len(lines)
        if kind == "delete":
            del lines[index]
        elif kind == "duplicate":
            lines.insert(index, lines[index])
        elif kind == "replace":
            lines[index] = text
        elif kind == "indent":
            lines[index] = "  " + lines[index]
        else:
            lines[index] = lines[index][: len(text)]
        if not lines:
            lines = [""]
    load_or_refuse("\n".join(lines))


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-10, max_value=10**6)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.sampled_from(["callee", "both", "caller", "operator_tone", "default_tone", "+911", ""])
)
FIELD_NAMES = [
    "version",
    "passthru",
    "agent_groups",
    "default",
    "tenants",
    "rules",
    "categories",
    "numbers",
    "trunk",
    "parallel",
    "max_parallel_attempts",
    "music_on_hold",
    "playback_to",
    "id",
    "kind",
    "target",
    "threshold",
    "phrases",
    "campaigns",
    "escalate_status",
]
trees = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(FUZZ, max_examples=60)
@given(st.dictionaries(st.sampled_from(FIELD_NAMES), trees, max_size=6))
def test_any_tree_dumped_as_yaml(tree: dict[str, Any]) -> None:
    load_or_refuse(yaml.safe_dump(tree, default_flow_style=False, allow_unicode=True))


group_fields = st.fixed_dictionaries(
    {"numbers": st.lists(st.from_regex(r"\+91[0-9]{10}", fullmatch=True), min_size=1, max_size=8)},
    optional={
        "parallel": st.booleans(),
        "max_parallel_attempts": st.integers(min_value=-1, max_value=9),
        "music_on_hold": st.sampled_from(["operator_tone", "default_tone", "beep", None]),
        "playback_to": st.sampled_from(["callee", "both", "caller", None]),
    },
)


@FUZZ
@given(group_fields)
def test_every_accepted_group_makes_a_connect_answer_exotel_accepts(group: dict[str, Any]) -> None:
    rules = load_or_refuse(yaml.safe_dump({"version": 1, "agent_groups": {"g": group}}))
    if rules is None:
        return
    answer = orjson.loads(connect_answer(rules.agent_groups["g"], None).to_json())
    ConnectAnswer.model_validate(answer)
    parallel = answer.get("parallel_ringing")
    if parallel:
        assert (
            1 <= parallel["max_parallel_attempts"] <= 5
            and len(answer["destination"]["numbers"]) <= 5
        )
    assert answer.get("start_call_playback", {}).get("playback_to", "callee") in ("callee", "both")
    assert answer.get("music_on_hold", {}).get("type", "operator_tone") in (
        "operator_tone",
        "default_tone",
    )


def test_keys_with_newlines_still_give_one_line_per_problem() -> None:
    text = 'version: 1\ntenants:\n  "a\\nb": {nope: 1}\n'
    assert load_or_refuse(text) is None
