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

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.errors import ProtocolError


class RulesError(ProtocolError):
    """The rules file is invalid; the message names the line where possible."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PhraseCategory(_Strict):
    phrases: list[str] = Field(min_length=1)
    negatable: bool = Field(True, description="'I do not want to cancel' does not count")
    fuzzy: bool = Field(True, description="tolerate ASR misspellings and inflections")


class _RuleBase(_Strict):
    id: str
    priority: int = Field(100, description="lower fires first")
    target: str = Field(description="agent group to escalate to")
    enabled: bool = True


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
    seconds: float = Field(gt=0)


class RepetitionRule(_RuleBase):
    kind: Literal["repetition"]
    count: int = Field(2, ge=1, description="consecutive repeats of the caller's utterance")


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


class RuleSet(_Strict):
    redact_pii: bool | None = None
    categories: dict[str, PhraseCategory] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)


class TenantRules(RuleSet):
    campaigns: dict[str, RuleSet] = Field(default_factory=dict)


class AgentGroup(_Strict):
    numbers: list[str] = Field(default_factory=list)
    trunk: str | None = None
    caller_id: str | None = None
    parallel: bool = False
    max_parallel_attempts: int = 3
    max_ringing_s: int = 45
    max_conversation_s: int = 3600
    record: bool = True
    custom_params: str | None = None


class PassthruMapping(_Strict):
    escalate_status: Literal[200, 302] = 302
    continue_status: Literal[200, 302] = 200


class ResolvedRules(BaseModel):
    """The effective rule set for one tenant/campaign: default < tenant < campaign."""

    model_config = ConfigDict(frozen=True)

    redact_pii: bool
    categories: dict[str, PhraseCategory]
    rules: list[Rule]


class RulesFile(_Strict):
    version: Literal[1] = 1
    passthru: PassthruMapping = Field(default_factory=PassthruMapping)
    agent_groups: dict[str, AgentGroup] = Field(default_factory=dict)
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
        categories: dict[str, PhraseCategory] = {}
        rules: dict[str, Rule] = {}
        for layer in layers:
            if layer.redact_pii is not None:
                redact = layer.redact_pii
            categories.update(layer.categories)
            rules.update({rule.id: rule for rule in layer.rules})
        ordered = sorted((r for r in rules.values() if r.enabled), key=lambda r: r.priority)
        return ResolvedRules(redact_pii=redact, categories=categories, rules=ordered)
