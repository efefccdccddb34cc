"""The rules file: keyword categories (spotted by analytics), escalation rules (evaluated by
routing) and agent groups (dialled by Connect), per tenant and campaign with a default set.

One YAML file serves both stages. Parsing is pure (text in, models out); services read the file.
Layout::

    version: 1
    passthru: {escalate_status: 302, continue_status: 200}
    agent_groups:
      collections_agents: {numbers: ["+9180..."], caller_id: "080...", parallel: true}
    default:                       # applies to every tenant/campaign unless overridden
      redact_pii: true
      language: en                 # what callers speak: a Whisper language code, or auto
      categories:
        human_request: {phrases: ["talk to a human", "speak to an agent", "supervisor"]}
      rules:
        - {id: angry, kind: sentiment_rolling, threshold: -0.5, last_n: 3, target: support}
    tenants:
      acme-lending:
        categories: {...}          # merged over default (same name replaces)
        rules: [...]               # merged over default by rule id
        campaigns:
          collections: {categories: {...}, rules: [...]}
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from importlib import resources
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.errors import ProtocolError
from schemas.tomllines import toml_line
from schemas.yamllines import node_line, yaml_line

DEFAULT_RULES_RESOURCE = "rules.yaml"
MAX_PARALLEL_RINGING = 5  # Exotel rings at most 5 numbers at once
MAX_RULES_BYTES = 1024 * 1024
MAX_DEPTH = 32  # the layout needs 8 levels; deeper is a mistake (or an attack on the parser)
MAX_NODES = 200_000  # YAML aliases can make a small file expand into a huge document


class RulesError(ProtocolError):
    """The rules file is invalid; the message names the line where possible."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PhraseCategory(_Strict):
    phrases: list[str] = Field(min_length=1)
    negatable: bool = Field(True, description="'I do not want to cancel' does not count")
    fuzzy: bool = Field(True, description="tolerate ASR misspellings and inflections")


class _RuleBase(_Strict):
    id: str = Field(min_length=1)
    priority: int = Field(100, description="lower fires first; ties keep file order")
    target: str = Field(description="agent group to escalate to")
    enabled: bool = True
    description: str | None = Field(None, description="shown to the agent and in decisions")


class SentimentRollingRule(_RuleBase):
    kind: Literal["sentiment_rolling"]
    threshold: float = Field(ge=-1.0, le=1.0)
    last_n: int | None = Field(3, ge=1)
    window_s: float | None = Field(None, gt=0)
    min_utterances: int = Field(2, ge=1)


class SentimentSingleRule(_RuleBase):
    kind: Literal["sentiment_single"]
    threshold: float = Field(ge=-1.0, le=1.0)
    min_confidence: float = Field(0.0, ge=0.0, le=1.0)


class KeywordRule(_RuleBase):
    kind: Literal["keyword"]
    categories: list[str] = Field(min_length=1)
    min_hits: int = Field(1, ge=1)


class DtmfRule(_RuleBase):
    kind: Literal["dtmf"]
    digits: list[str] = Field(min_length=1)


class SilenceRule(_RuleBase):
    kind: Literal["silence"]
    seconds: float = Field(gt=0, description="no caller speech for this long while live")


class RepetitionRule(_RuleBase):
    kind: Literal["repetition"]
    count: int = Field(2, ge=1, description="consecutive repeats of the caller's utterance")
    similarity: float = Field(
        0.6,
        gt=0.0,
        le=1.0,
        description=(
            "overlap of an utterance's content words with those of any utterance in the "
            "current run of repeats (Dice; words stemmed, fillers dropped, one mishearing "
            "tolerated in long words) that counts as one more repeat; the one setting for it: "
            "analytics counts repeats with it, routing compares the count"
        ),
    )


class MaxDurationRule(_RuleBase):
    kind: Literal["max_duration"]
    seconds: float = Field(gt=0)


Rule = Annotated[
    SentimentRollingRule
    | SentimentSingleRule
    | KeywordRule
    | DtmfRule
    | SilenceRule
    | RepetitionRule
    | MaxDurationRule,
    Field(discriminator="kind"),
]


LANGUAGE_PATTERN = r"^(auto|[a-z]{2,3})$"


class RuleSet(_Strict):
    redact_pii: bool | None = None
    language: str | None = Field(
        None,
        pattern=LANGUAGE_PATTERN,
        description=(
            "what the callers speak, for a multilingual ASR model: a Whisper language code "
            "('en', 'hi', ...) or 'auto' (detected per call); unset: inherited, in the end the "
            "worker's whisper_language"
        ),
    )
    categories: dict[str, PhraseCategory] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)


class TenantRules(RuleSet):
    campaigns: dict[str, RuleSet] = Field(default_factory=dict)


class AgentGroup(_Strict):
    """Who the Connect applet dials for an escalation: phone numbers or one SIP trunk."""

    numbers: list[str] = Field(default_factory=list)
    trunk: str | None = None
    caller_id: str | None = None
    parallel: bool = Field(False, description=f"ring up to {MAX_PARALLEL_RINGING} numbers at once")
    max_parallel_attempts: int = Field(3, ge=1, le=MAX_PARALLEL_RINGING)
    max_ringing_s: int = Field(45, ge=1)
    max_conversation_s: int = Field(3600, ge=1)
    record: bool = True
    recording_channels: Literal["single", "dual"] = "dual"
    music_on_hold: Literal["operator_tone", "default_tone"] | None = "operator_tone"
    playback_to: Literal["callee", "both"] | None = Field(
        "callee", description="who hears the escalation summary on pickup (None: nobody)"
    )
    custom_params: str | None = None

    @field_validator("parallel")
    @classmethod
    def _parallel_cap(cls, value: bool, info: ValidationInfo) -> bool:
        numbers = info.data.get("numbers") or []
        if value and len(numbers) > MAX_PARALLEL_RINGING:
            raise ValueError(
                f"parallel ringing reaches at most {MAX_PARALLEL_RINGING} numbers, "
                f"this group has {len(numbers)}"
            )
        return value

    @model_validator(mode="after")
    def _one_destination(self) -> AgentGroup:
        if bool(self.numbers) == bool(self.trunk):
            raise ValueError("an agent group needs either 'numbers' or 'trunk' (exactly one)")
        return self


class PassthruMapping(_Strict):
    """HTTP status Passthru answers: 200 takes Exotel's first branch, 302 the second."""

    escalate_status: Literal[200, 302] = 302
    continue_status: Literal[200, 302] = 200
    unknown_status: Literal[200, 302] | None = Field(
        None, description="answer for a CallSid never seen (None: continue_status)"
    )

    @model_validator(mode="after")
    def _distinct(self) -> PassthruMapping:
        if self.escalate_status == self.continue_status:
            raise ValueError("escalate_status and continue_status must differ")
        return self


class ResolvedRules(BaseModel):
    """The effective rule set for one tenant/campaign: default < tenant < campaign."""

    model_config = ConfigDict(frozen=True)

    redact_pii: bool
    categories: dict[str, PhraseCategory]
    rules: list[Rule]
    language: str | None = None  # None: the worker's whisper_language


class RulesFile(_Strict):
    version: Literal[1] = 1
    passthru: PassthruMapping = Field(default_factory=PassthruMapping)
    agent_groups: dict[str, AgentGroup] = Field(default_factory=dict)
    default_agent_group: str | None = Field(
        None, description="Connect target for a call that was not escalated (None: first group)"
    )
    default: RuleSet = Field(default_factory=RuleSet)
    tenants: dict[str, TenantRules] = Field(default_factory=dict)

    def resolve(self, tenant: str = "default", campaign: str = "default") -> ResolvedRules:
        layers: list[RuleSet] = [self.default]
        tenant_rules = self.tenants.get(tenant)
        if tenant_rules is not None:
            layers.append(tenant_rules)
            campaign_rules = tenant_rules.campaigns.get(campaign)
            if campaign_rules is not None:
                layers.append(campaign_rules)
        redact = True
        language: str | None = None
        categories: dict[str, PhraseCategory] = {}
        rules: dict[str, Rule] = {}
        for layer in layers:
            if layer.redact_pii is not None:
                redact = layer.redact_pii
            language = layer.language or language
            categories.update(layer.categories)
            rules.update({rule.id: rule for rule in layer.rules})
        ordered = sorted((r for r in rules.values() if r.enabled), key=lambda r: r.priority)
        return ResolvedRules(
            redact_pii=redact, categories=categories, rules=ordered, language=language
        )

    def languages(self) -> set[str]:
        """Every language the file names (default, tenants, campaigns)."""
        sets = [self.default, *self.tenants.values()]
        sets += [c for t in self.tenants.values() for c in t.campaigns.values()]
        return {s.language for s in sets if s.language}

    def agent_group(self, name: str | None) -> tuple[str, AgentGroup] | None:
        """The named group, else the default group, else the first one; None if there are none."""
        for candidate in (name, self.default_agent_group):
            if candidate and candidate in self.agent_groups:
                return candidate, self.agent_groups[candidate]
        if self.agent_groups:
            first = next(iter(self.agent_groups))
            return first, self.agent_groups[first]
        return None


# --- parsing: text in, validated models out, errors that name the line ------------------------


def _check_tree(node: yaml.Node, source: str) -> None:
    """Duplicate keys, nesting depth and size (aliases included), before anything is built."""
    budget = [MAX_NODES]

    def walk(node: yaml.Node, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise RulesError(f"{source}: more than {MAX_NODES} values (YAML aliases?)")
        if depth > MAX_DEPTH:
            raise RulesError(f"{source}:{node_line(node)}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        raise RulesError(f"{source}:{node_line(key)}: duplicate key {key.value!r}")
                    seen.add(key.value)
                walk(value, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item, depth + 1)

    walk(node, 0)


LineOf = Callable[[tuple[int | str, ...]], int | None]


def _yaml_lines(root: yaml.Node | None) -> LineOf:
    return lambda loc: yaml_line(root, loc)


def _format_validation(exc: ValidationError, line_of: LineOf, source: str) -> RulesError:
    lines: list[str] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        line = line_of(loc)
        prefix = f"{source}:{line}" if line is not None else source
        lines.append(" ".join(f"{prefix}: {where}: {error['msg']}".split()))
    return RulesError("\n".join(lines))


def _cross_check(rules: RulesFile, line_of: LineOf, source: str) -> None:
    """References between sections: rule targets and keyword categories must exist."""
    known_categories = set(rules.default.categories)
    for tenant in rules.tenants.values():
        known_categories |= set(tenant.categories)
        for campaign in tenant.campaigns.values():
            known_categories |= set(campaign.categories)
    layers: list[tuple[tuple[str | int, ...], RuleSet]] = [(("default",), rules.default)]
    for tname, tenant in rules.tenants.items():
        layers.append((("tenants", tname), tenant))
        for cname, campaign in tenant.campaigns.items():
            layers.append((("tenants", tname, "campaigns", cname), campaign))
    problems: list[str] = []

    def report(loc: tuple[str | int, ...], message: str) -> None:
        line = line_of(loc)
        where = ".".join(str(p) for p in loc)
        text = f"{source}:{line}: {where}: {message}" if line else f"{source}: {message}"
        problems.append(" ".join(text.split()))  # one line per problem, whatever the keys hold

    seen_ids: set[tuple[tuple[str | int, ...], str]] = set()
    for base, layer in layers:
        for index, rule in enumerate(layer.rules):
            loc = (*base, "rules", index)
            if (base, rule.id) in seen_ids:
                report((*loc, "id"), f"duplicate rule id {rule.id!r} in the same set")
            seen_ids.add((base, rule.id))
            if rule.target not in rules.agent_groups:
                report((*loc, "target"), f"unknown agent group {rule.target!r}")
            if isinstance(rule, KeywordRule):
                for category in rule.categories:
                    if category not in known_categories:
                        report((*loc, "categories"), f"unknown keyword category {category!r}")
    if rules.default_agent_group and rules.default_agent_group not in rules.agent_groups:
        report(("default_agent_group",), f"unknown agent group {rules.default_agent_group!r}")
    if problems:
        raise RulesError("\n".join(problems))


def _validate(data: Any, line_of: LineOf, source: str) -> RulesFile:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RulesError(f"{source}:1: the rules file must be a mapping at the top level")
    try:
        rules = RulesFile.model_validate(data)
    except ValidationError as exc:
        raise _format_validation(exc, line_of, source) from exc
    _cross_check(rules, line_of, source)
    return rules


def parse_rules_yaml(text: str, source: str = "<rules>") -> RulesFile:
    """Parse and validate a YAML rules file; errors read ``file:line: message``."""
    _check_size(text, source)
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        at = text[: exc.position].count("\n") + 1
        raise RulesError(f"{source}:{at}: invalid YAML: character {exc.character!r}") from exc
    except yaml.YAMLError as exc:
        raise RulesError(f"{source}: invalid YAML: {_first_line(exc)}") from exc
    try:
        root = loader.get_single_node()
        if root is not None:
            _check_tree(root, source)
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else "?"
        problem = exc.problem or _first_line(exc)
        raise RulesError(f"{source}:{line}: invalid YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise RulesError(f"{source}: invalid YAML: {_first_line(exc)}") from exc
    except RecursionError as exc:
        raise RulesError(f"{source}: nested too deeply to read") from exc
    finally:
        loader.dispose()
    return _validate(data, _yaml_lines(root), source)


def parse_rules_toml(text: str, source: str = "<rules>") -> RulesFile:
    """Parse a TOML rules file (same layout); errors name the line of the key at fault."""
    _check_size(text, source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: invalid TOML: {_first_line(exc)}") from exc
    except RecursionError as exc:
        raise RulesError(f"{source}: nested too deeply to read") from exc
    return _validate(data, lambda loc: toml_line(text, loc), source)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _check_size(text: str, source: str) -> None:
    if len(text) > MAX_RULES_BYTES:
        raise RulesError(f"{source}: larger than {MAX_RULES_BYTES} characters")


def decode_rules(data: bytes, source: str = "<rules>") -> str:
    """The text of a rules file read as bytes; not UTF-8 -> :class:`RulesError` with the line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RulesError(f"{source}:{line}: not UTF-8 (byte {exc.start})") from exc


def parse_rules(text: str, source: str = "<rules>") -> RulesFile:
    """YAML unless ``source`` ends in ``.toml``."""
    if source.endswith(".toml"):
        return parse_rules_toml(text, source)
    return parse_rules_yaml(text, source)


def default_rules_text() -> str:
    """The shipped example rules file (``schemas/data/rules.yaml``)."""
    return resources.files("schemas").joinpath("data", DEFAULT_RULES_RESOURCE).read_text("utf-8")


def default_rules() -> RulesFile:
    return parse_rules_yaml(default_rules_text(), "schemas/data/rules.yaml")
