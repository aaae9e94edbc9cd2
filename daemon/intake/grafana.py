"""Grafana unified alerting's webhook payload and its mapping to submissions. Pure: no I/O, no clock.

Grafana's webhook contact point sends Alertmanager's shape plus its own fields
(https://grafana.com/docs/grafana/latest/alerting/configure-notifications/manage-contact-points/integrations/webhook-notifier/):
``orgId``, ``title``, ``state``, ``message`` at the top, and per alert the silence, dashboard,
panel and image URLs and the evaluated ``values``/``valueString``. The mapping is Alertmanager's
(:mod:`daemon.intake.alertmanager`) with those extras in the body and a ``grafana:`` key prefix;
with ``use_templates`` (``per: group``) the group's subject and body are the contact point's
templated ``title`` and ``message``.
The legacy (pre-unified) alerting webhook is a different document and is refused with a 422.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from pydantic import Field

from daemon.intake.accept import Submission
from daemon.intake.alertmanager import (
    BODY_MAX,
    SUBJECT_MAX,
    Alert,
    AlertPayload,
    Flavor,
    clip,
    link_lines,
    submissions,
)
from daemon.intake.webhook_config import GrafanaIntakeConfig

GRAFANA = Flavor(prefix="grafana", sender="Grafana")


class GrafanaAlert(Alert):
    silence_url: str = Field("", alias="silenceURL")
    dashboard_url: str = Field("", alias="dashboardURL")
    panel_url: str = Field("", alias="panelURL")
    image_url: str = Field("", alias="imageURL")
    #: Grafana 9.x: "[ var='B' labels={} value=44.2 ]"
    value_string: str = Field("", alias="valueString")
    #: Grafana 10+: the reduced expressions by ref id
    values: dict[str, float | None] | None = None

    def links(self) -> list[tuple[str, str]]:
        return [
            *super().links(),
            ("Dashboard", self.dashboard_url),
            ("Panel", self.panel_url),
            ("Image", self.image_url),
            ("Silence", self.silence_url),
        ]

    def details(self) -> list[str]:
        if self.values:
            return ["Values: " + ", ".join(f"{k}={_number(v)}" for k, v in self.values.items())]
        return [f"Values: {self.value_string}"] if self.value_string.strip() else []


def _number(value: float | None) -> str:
    """Six significant digits, but never fewer than the whole part has: 1048576 stays 1048576
    (``:g`` alone wrote a queue of 1048576 as 1.04858e+06, and 53687091200 bytes as 5.36871e+10)."""
    if value is None:
        return "none"
    whole = len(f"{abs(value):.0f}") if math.isfinite(value) else 0
    return f"{value:.{max(6, whole)}g}"


class GrafanaPayload(AlertPayload):
    """The body of Grafana's webhook contact point (``version`` "1")."""

    version: str = "1"
    org_id: int | None = Field(None, alias="orgId")
    title: str = ""
    state: str = ""
    message: str = ""
    alerts: Sequence[GrafanaAlert]


def grafana_submissions(payload: GrafanaPayload, config: GrafanaIntakeConfig) -> list[Submission]:
    """The notifications for one Grafana webhook call: one per alert, or one for the group, in
    Grafana's own words if ``use_templates`` (where a template left one empty, backchannel's)."""
    made = submissions(payload, config, GRAFANA)
    if not (config.use_templates and made):  # use_templates comes with per: group (validated)
        return made
    (group,) = made
    title, message = " ".join(payload.title.split()), payload.message.strip()
    links = link_lines([(GRAFANA.sender, payload.external_url)])
    return [
        replace(
            group,
            subject=clip(title, SUBJECT_MAX) if title else group.subject,
            body=clip("\n\n".join([message, *links]), BODY_MAX) if message else group.body,
        )
    ]
