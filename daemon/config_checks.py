"""Configuration of the provider checks and of how their results are weighed.

Every check's YAML has ``type``, ``name``, ``every``, ``timeout`` and the deciding fields
``role`` (trigger, confirm, corroborate, control), ``weight`` and ``max_age``
(docs/deciding.md). The check modules keep their own settings models where they have them
(``imap``, ``roundtrip``); this module adds the deciding fields to each and draws the union.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from daemon.checks.imap import ImapCheckConfig as _ImapCheckConfig
from daemon.checks.roundtrip import RoundtripCheckConfig as _RoundtripCheckConfig
from daemon.configbase import (
    Duration,
    Model,
    PositiveInt,
    Secret,
    SmtpConfig,
    format_duration,
    positive_duration,
)
from daemon.core.assessment import CheckPolicy, Policy, Role
from daemon.core.flapping import FlapThresholds


class CheckRoleConfig(Model):
    """The fields every check's YAML gains: ``role``, ``weight``, ``max_age``."""

    role: Role = Role.TRIGGER
    weight: PositiveInt = 1
    #: default: two missed runs, ``2 * every + timeout``
    max_age: Duration | None = None


class FlapConfig(Model):
    low: float = Field(5.0, ge=0, le=100)
    high: float = Field(20.0, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> FlapConfig:
        self.thresholds()  # its ValueError names the rule
        return self

    def thresholds(self) -> FlapThresholds:
        return FlapThresholds(self.low, self.high)


class ControlsConfig(Model):
    #: control weight that must be down to blame our own network (default: every control)
    quorum: PositiveInt | None = None


class DecidingConfig(Model):
    """The provider-level fields: ``quorum``, ``controls``, ``recovery_requires_corroboration``, ``flap``."""

    quorum: PositiveInt = 1
    controls: ControlsConfig = Field(default_factory=ControlsConfig)
    recovery_requires_corroboration: bool = False
    flap: FlapConfig = Field(default_factory=FlapConfig)

    def policy(self, checks: Mapping[str, tuple[CheckRoleConfig, timedelta]]) -> Policy:
        """The pure policy; ``checks`` maps each check's name to its roles and default ``max_age``.

        Raises ValueError when no check can trigger or a quorum cannot be reached.
        """
        policies = {n: CheckPolicy(c.role, c.weight, c.max_age or age) for n, (c, age) in checks.items()}
        policy = Policy(policies, self.quorum, self.controls.quorum, self.recovery_requires_corroboration)
        _reachable(policy)
        return policy


def _reachable(policy: Policy) -> None:
    triggers = sum(policy.of(n).weight for n in policy.named(Role.TRIGGER))
    if policy.quorum > triggers:
        raise ValueError(f"quorum {policy.quorum} exceeds the weight of the trigger checks ({triggers})")
    controls = sum(policy.of(n).weight for n in policy.named(Role.CONTROL))
    if policy.control_quorum is not None and policy.control_quorum > controls:
        raise ValueError(f"controls.quorum {policy.control_quorum} exceeds the controls' weight ({controls})")


class SmtpCheckConfig(CheckRoleConfig):
    type: Literal["smtp"]
    name: str | None = None
    every: Duration = timedelta(seconds=15)
    timeout: Duration = timedelta(seconds=10)
    smtp: SmtpConfig | None = None
    #: degraded when the certificate has fewer days left (0: do not judge)
    cert_warn_days: int = Field(14, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _timeout_fits_every(cls, data: Any) -> Any:
        """An omitted timeout is 10s, or half of ``every`` when 10s would not fit inside it."""
        if not isinstance(data, dict) or "timeout" in data or "every" not in data:
            return data
        try:
            every = positive_duration(data["every"])
        except ValueError:
            return data
        default = timedelta(seconds=10)
        return {**data, "timeout": default if every > default else every / 2}

    @field_validator("timeout")
    @classmethod
    def _shorter_than_every(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        every = info.data.get("every")
        if every is not None and value >= every:
            raise ValueError(f"must be shorter than every ({format_duration(every)})")
        return value


class ImapCheckConfig(_ImapCheckConfig, CheckRoleConfig):
    """IMAP login and SELECT (``daemon.checks.imap``)."""


class RoundtripCheckConfig(_RoundtripCheckConfig, CheckRoleConfig):
    """A canary through the provider, watched for in a mailbox (``daemon.checks.roundtrip``)."""


class _HttpBased(CheckRoleConfig):
    name: str | None = None
    every: Duration = timedelta(seconds=60)
    timeout: Duration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _fits(self) -> _HttpBased:
        if self.timeout >= self.every:
            raise ValueError("timeout must be shorter than every")
        return self


class GraphCheckConfig(_HttpBased):
    """Microsoft 365 service health through Microsoft Graph (app permission ServiceHealth.Read.All)."""

    type: Literal["graph"]
    role: Role = Role.CORROBORATE
    tenant: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: Secret
    service: str = "Exchange Online"
    graph_base: str = "https://graph.microsoft.com"
    login_base: str = "https://login.microsoftonline.com"


class StatuspageCheckConfig(_HttpBased):
    """An Atlassian Statuspage (SendGrid, Mailgun, SparkPost, Mailjet, Twilio...)."""

    type: Literal["statuspage"]
    role: Role = Role.CORROBORATE
    url: str
    components: list[str] = Field(default_factory=list)


class GoogleWorkspaceCheckConfig(_HttpBased):
    """Google Workspace status dashboard: active incidents of a product (Gmail by default)."""

    type: Literal["google_workspace"]
    role: Role = Role.CORROBORATE
    url: str = "https://www.google.com/appsstatus/dashboard/incidents.json"
    product: str = "Gmail"


class HttpCheckConfig(_HttpBased):
    """Any JSON endpoint: an expected status code and, optionally, a value at a dotted path."""

    type: Literal["http"]
    url: str
    expect_status: int = Field(200, ge=100, le=599)
    path: str | None = None
    equals: Any = None
    in_: list[Any] | None = Field(None, alias="in")
    headers: dict[str, str] = Field(default_factory=dict)


class TcpCheckConfig(CheckRoleConfig):
    """A TCP connect, typically a control target outside the provider."""

    type: Literal["tcp"]
    name: str | None = None
    role: Role = Role.CONTROL
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    every: Duration = timedelta(seconds=15)
    timeout: Duration = timedelta(seconds=5)


CheckConfig = Annotated[
    SmtpCheckConfig
    | ImapCheckConfig
    | RoundtripCheckConfig
    | GraphCheckConfig
    | StatuspageCheckConfig
    | GoogleWorkspaceCheckConfig
    | HttpCheckConfig
    | TcpCheckConfig,
    Field(discriminator="type"),
]


def check_names(checks: list[CheckConfig]) -> list[str]:
    """Each check's name: its own, else its type, numbered when a type repeats."""
    counts: dict[str, int] = {}
    for check in checks:
        counts[check.type] = counts.get(check.type, 0) + 1
    names, seen = [], dict.fromkeys(counts, 0)
    for check in checks:
        seen[check.type] += 1
        default = check.type if counts[check.type] == 1 else f"{check.type}-{seen[check.type]}"
        names.append(check.name or default)
    return names


def stale_after(check: CheckConfig) -> timedelta:
    """When a check's latest result stops counting: two missed runs, by default."""
    longest = check.fail_after if isinstance(check, RoundtripCheckConfig) else check.timeout
    return 2 * check.every + longest
