"""Configuration of the webhook intakes: ``intake.alertmanager`` and ``intake.grafana``.

Both read alerts of the same shape, so they share one model; only the defaults of ``source``
differ. Field reference: ``docs/intake.md``.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import Field, field_validator, model_validator

from daemon.configbase import EmailAddress, Model
from daemon.core.model import Severity

#: Label values seen in the wild (Prometheus mixins, kube-prometheus, PagerDuty-style names).
DEFAULT_SEVERITIES: dict[str, Severity] = {
    "critical": Severity.CRITICAL,
    "page": Severity.CRITICAL,
    "emergency": Severity.CRITICAL,
    "fatal": Severity.CRITICAL,
    "high": Severity.HIGH,
    "error": Severity.HIGH,
    "major": Severity.HIGH,
    "warning": Severity.WARNING,
    "warn": Severity.WARNING,
    "minor": Severity.WARNING,
    "info": Severity.INFO,
    "informational": Severity.INFO,
    "notice": Severity.INFO,
    "low": Severity.INFO,
    "none": Severity.INFO,
}


class AlertIntakeConfig(Model):
    """How one webhook intake turns alerts into notifications."""

    #: one notification per alert, or one per group (the whole webhook call)
    per: Literal["alert", "group"] = "alert"
    #: the alert label whose value gives the severity
    severity_label: str = Field("severity", min_length=1)
    #: label value (case-insensitive) to severity; merged over DEFAULT_SEVERITIES
    severities: dict[str, Severity] = Field(default_factory=dict)
    #: for alerts without the label, or with a value not in the mapping
    default_severity: Severity = Severity.WARNING
    #: the notifications' ``source`` (routes can match on it)
    source: str = Field("alertmanager", min_length=1, max_length=128)
    #: recipients of every notification; empty means the email channel's ``to``
    recipients: list[EmailAddress] = Field(default_factory=list, max_length=100)

    @field_validator("severities")
    @classmethod
    def _lower_keys(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        return {k.lower(): v for k, v in value.items()}

    def severity_of(self, value: str | None) -> Severity:
        """The severity for a label value (None when the alert has no such label)."""
        if value is None:
            return self.default_severity
        key = value.strip().lower()
        return self.severities.get(key) or DEFAULT_SEVERITIES.get(key) or self.default_severity


class AlertmanagerIntakeConfig(AlertIntakeConfig):
    source: str = Field("alertmanager", min_length=1, max_length=128)


class GrafanaIntakeConfig(AlertIntakeConfig):
    source: str = Field("grafana", min_length=1, max_length=128)
    #: ``per: group`` only: the contact point's templated Title as the subject and Message as the
    #: body (for templates customised in Grafana), instead of backchannel's text of the alerts
    use_templates: bool = False

    @model_validator(mode="after")
    def _templates_need_groups(self) -> GrafanaIntakeConfig:
        if self.use_templates and self.per != "group":
            raise ValueError("use_templates needs per: group (Grafana's title and message are the group's)")
        return self


class WebhookSettings(Protocol):
    """What the webhook endpoints read: the ``intake`` section of the configuration has both."""

    @property
    def alertmanager(self) -> AlertIntakeConfig: ...

    @property
    def grafana(self) -> GrafanaIntakeConfig: ...


class WebhookIntakesConfig(Model):
    """Both webhook intakes (a stand-alone :class:`WebhookSettings`, e.g. for tests).

    In the daemon's configuration these two fields live in the ``intake`` section. The endpoints
    are always served, behind the API tokens.
    """

    alertmanager: AlertmanagerIntakeConfig = Field(default_factory=AlertmanagerIntakeConfig)
    grafana: GrafanaIntakeConfig = Field(default_factory=GrafanaIntakeConfig)
