"""Prometheus Alertmanager's webhook payload and its mapping to submissions. Pure: no I/O, no clock.

The payload is version 4 of the webhook receiver's JSON
(https://prometheus.io/docs/alerting/latest/configuration/#webhook_config). Grafana's unified
alerting sends the same shape with a few more fields (:mod:`daemon.intake.grafana`), so the
mapping here serves both.

Idempotency: Alertmanager re-sends a group on every ``repeat_interval`` and whenever the group
changes, and retries a failed POST. An alert is identified by its ``fingerprint`` (a hash of its
labels) and ``startsAt`` (the start of this firing episode), so the key
``<source>:<fingerprint>:<startsAt>:<status>`` makes every re-send of the same firing a duplicate,
while its resolution is a new notification that names the firing one in the ``follows`` label.
A firing again under the key of a firing already resolved (Prometheus keeps ``startsAt`` when
its alert fires again after Alertmanager resolved it) is told again: the store keys it as a new
episode (:mod:`daemon.store.episodes`, which relies on the ``:firing`` and ``:resolved`` endings).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from daemon.core.model import (
    CHANNEL_THREAD_LABELS,
    FOLLOWS_LABEL,
    GROUP_FIRING_LABEL,
    RESERVED_LABELS,
    RESOLVES_LABEL,
    SUPERSEDES_LABEL,
)
from daemon.intake.accept import Submission
from daemon.intake.webhook_config import AlertIntakeConfig

Status = Literal["firing", "resolved"]
log = logging.getLogger(__name__)


SUBJECT_MAX = 250
BODY_MAX = 64 * 1024
#: one annotation's text in a body: a huge one must not push the labels, times and links out of it
ANNOTATION_MAX = 4 * 1024
#: annotations shown as the headline of the body rather than in the annotation list
HEADLINE = ("summary", "description", "message")


class Alert(BaseModel):
    """One alert; unknown fields are ignored so newer Alertmanager versions keep working."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    status: Status
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: AwareDatetime = Field(alias="startsAt")
    #: Alertmanager writes the zero time (0001-01-01T00:00:00Z) for "not ended"
    ends_at: AwareDatetime | None = Field(None, alias="endsAt")
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: str = ""

    @field_validator("starts_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        return _utc(value)

    @field_validator("ends_at")
    @classmethod
    def _zero_is_none(cls, value: datetime | None) -> datetime | None:
        return None if value is None or value.year <= 1 else _utc(value)

    def identity(self) -> str:
        """The fingerprint, or (hand-written payloads) a hash of the labels as Alertmanager's is."""
        if self.fingerprint:
            return self.fingerprint
        text = "\xff".join(f"{k}\xff{v}" for k, v in sorted(self.labels.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def links(self) -> list[tuple[str, str]]:
        """Named URLs shown at the end of the body."""
        return [("Source", self.generator_url)] if self.generator_url else []

    def details(self) -> list[str]:
        """Extra body lines a vendor adds (Grafana: the evaluated values)."""
        return []


class AlertPayload(BaseModel):
    """What Alertmanager and Grafana both send."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    #: only a group's notification uses it (``per: group``); hand-written payloads may leave it out
    group_key: str = Field("", alias="groupKey")
    truncated_alerts: int = Field(0, ge=0, alias="truncatedAlerts")
    status: Status
    receiver: str
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field("", alias="externalURL")
    #: however many: Alertmanager sends a group whole (``max_alerts`` in its webhook_config caps it)
    alerts: Sequence[Alert]


class AlertmanagerPayload(AlertPayload):
    """The webhook body, version 4."""

    version: Literal["4"]


@dataclass(frozen=True)
class Flavor:
    """What differs between senders of this payload shape."""

    #: prefix of idempotency keys, so two senders' fingerprints never collide
    prefix: str
    #: how the body names the sender's own URL (``externalURL``)
    sender: str


AM = Flavor(prefix="alertmanager", sender="Alertmanager")


def submissions(payload: AlertPayload, config: AlertIntakeConfig, flavor: Flavor = AM) -> list[Submission]:
    """The notifications for one webhook call: one per alert, or one for the group."""
    if not payload.alerts:
        return []
    if config.per == "group":
        return [group_submission(payload, config, flavor)]
    if payload.truncated_alerts:  # per group, the body says so
        log.warning(
            "%s left %d alerts of receiver %s out of its call (max_alerts): they were not received",
            flavor.sender,
            payload.truncated_alerts,
            payload.receiver,
            extra={"event": "intake.truncated", "count": payload.truncated_alerts, "source": config.source},
        )
    return [alert_submission(payload, alert, config, flavor) for alert in payload.alerts]


def alert_key(flavor: Flavor, alert: Alert, status: Status) -> str:
    return _key(flavor, alert.identity(), _instant(alert.starts_at), status)


def _key(flavor: Flavor, identity: str, started: str, status: Status) -> str:
    return f"{flavor.prefix}:{identity}:{started}:{status}"


def alert_submission(
    payload: AlertPayload, alert: Alert, config: AlertIntakeConfig, flavor: Flavor = AM
) -> Submission:
    # identity and start time are each needed two or three times: computed once (the hot path)
    identity, started = alert.identity(), _instant(alert.starts_at)
    labels = _own_labels(alert.labels)
    labels["alert_status"] = alert.status
    labels["alert_fingerprint"] = identity
    if alert.status == "resolved":
        labels["follows"] = labels[RESOLVES_LABEL] = _key(flavor, identity, started, "firing")
    body = [
        *_alert_text(alert, started),
        *link_lines([*alert.links(), (flavor.sender, payload.external_url)]),
    ]
    return Submission(
        severity=config.severity_of(alert.labels.get(config.severity_label)),
        subject=_subject(alert.status, alert.labels.get("alertname"), _headline(alert.annotations)),
        body=clip("\n".join(body), BODY_MAX),
        source=config.source,
        recipients=tuple(config.recipients),
        labels=labels,
        idempotency_key=_key(flavor, identity, started, alert.status),
    )


def _own_labels(labels: dict[str, str]) -> dict[str, str]:
    """A copy of an alert's labels without ``resolves``, ``supersedes``, ``follows`` and
    ``slack_thread_ts``: only this mapping says what a notification closes or threads under (an
    alert labelled so would otherwise close another notification, post in its thread, or post to a
    Slack channel of its choosing instead of the configured targets). Grafana's mapping is this one."""
    own = dict(labels)
    for reserved in (*RESERVED_LABELS, FOLLOWS_LABEL, *CHANNEL_THREAD_LABELS):
        own.pop(reserved, None)
    return own


def group_lineage(flavor: Flavor, payload: AlertPayload) -> str:
    """What every version of one alert group shares: the sender's ``groupKey``."""
    return f"{flavor.prefix}:group:{_digest([payload.group_key])}"


def group_key(flavor: Flavor, payload: AlertPayload, status: Status) -> str:
    """One version of the group: changes when the group's alerts change (one joins, leaves, or
    resolves while others fire), so each change is a new notification.

    A member is marked only when it resolved in a group still firing: a group whose alerts all fire,
    or all resolved, has the key it had before members were marked (no re-page on upgrade).
    ``status`` "firing" for a resolved group names the version that fired with the same alerts.
    """
    mixed = status == "firing" and payload.status == "firing"
    members = sorted(
        f"{a.identity()}@{_instant(a.starts_at)}" + (":resolved" if mixed and a.status == "resolved" else "")
        for a in payload.alerts
    )
    return f"{group_lineage(flavor, payload)}:{_digest(members)}:{status}"


def firing_set(payload: AlertPayload) -> str:
    """The group's firing alerts (a digest), ``+`` after it when some resolved (GROUP_FIRING_LABEL)."""
    firing = sorted(f"{a.identity()}@{_instant(a.starts_at)}" for a in payload.alerts if a.status == "firing")
    resolved = any(a.status == "resolved" for a in payload.alerts)
    return _digest(firing) + ("+" if resolved else "")


def group_submission(payload: AlertPayload, config: AlertIntakeConfig, flavor: Flavor = AM) -> Submission:
    labels = _own_labels({**payload.common_labels, **payload.group_labels})
    labels["alert_status"] = payload.status
    labels["alert_count"] = str(len(payload.alerts) + payload.truncated_alerts)
    if payload.status == "resolved":
        labels["follows"] = labels[RESOLVES_LABEL] = group_key(flavor, payload, "firing")
    if payload.group_key:  # a hand-written payload without one: its versions are not linked
        labels[SUPERSEDES_LABEL] = group_lineage(flavor, payload)
        if payload.status == "firing":
            labels[GROUP_FIRING_LABEL] = firing_set(payload)
    # The firing alerts say how loud the group is; a resolved member no longer does (all of them,
    # for a group resolved as a whole).
    firing = [a for a in payload.alerts if a.status == "firing"] or payload.alerts
    severities = [config.severity_of(a.labels.get(config.severity_label)) for a in firing]
    return Submission(
        severity=min(severities, key=lambda s: s.rank),
        subject=_group_subject(payload),
        body=clip("\n".join(_group_text(payload, flavor)), BODY_MAX),
        source=config.source,
        recipients=tuple(config.recipients),
        labels=labels,
        idempotency_key=group_key(flavor, payload, payload.status),
    )


# --- text -----------------------------------------------------------------------------------------


def _headline(annotations: dict[str, str]) -> str | None:
    for name in HEADLINE:
        if text := annotations.get(name, "").strip():
            return text.splitlines()[0]
    return None


def _subject(status: str, alertname: str | None, headline: str | None) -> str:
    text = ": ".join(part for part in (alertname, headline) if part) or "alert"
    return clip(f"[{status.upper()}] {' '.join(text.split())}", SUBJECT_MAX)


def _group_subject(payload: AlertPayload) -> str:
    """Alertmanager's default title: ``[FIRING:2] <group label values> (<other common values>)``."""
    firing = sum(1 for a in payload.alerts if a.status == "firing")
    count = f":{firing}" if payload.status == "firing" else ""
    grouped = [v for _, v in sorted(payload.group_labels.items())]
    common = [v for k, v in sorted(payload.common_labels.items()) if k not in payload.group_labels]
    text = " ".join([*grouped, *([f"({' '.join(common)})"] if common else [])]) or "alerts"
    return clip(f"[{payload.status.upper()}{count}] {' '.join(text.split())}", SUBJECT_MAX)


def _alert_text(alert: Alert, started: str) -> list[str]:
    headline = (alert.annotations.get(name, "").strip() for name in HEADLINE)
    lines = [clip(text, ANNOTATION_MAX) for text in headline if text]
    lines += alert.details()
    lines += _pairs("Labels", alert.labels.items())
    others = ((k, clip(v, ANNOTATION_MAX)) for k, v in alert.annotations.items() if k not in HEADLINE)
    lines += _pairs("Annotations", others)
    lines.append(f"Started: {started}")
    if alert.status == "resolved" and alert.ends_at is not None:
        lines.append(f"Ended: {_instant(alert.ends_at)}")
    return lines


def _group_text(payload: AlertPayload, flavor: Flavor) -> list[str]:
    firing = sum(1 for a in payload.alerts if a.status == "firing")
    lines = [f"{firing} firing, {len(payload.alerts) - firing} resolved (receiver {payload.receiver})"]
    if payload.truncated_alerts:
        lines.append(f"{payload.truncated_alerts} more alerts were left out by the sender (max_alerts)")
    # what the alerts may take: the body less its head, its closing link and room for the line
    # saying how many are left out (SUBJECT_MAX is ample for either)
    room = BODY_MAX - SUBJECT_MAX - len(payload.external_url) - sum(len(line) + 1 for line in lines)
    for shown, alert in enumerate(payload.alerts):
        title = alert.labels.get("alertname", alert.identity())
        text = ["", f"--- {alert.status.upper()} {title}", *_alert_text(alert, _instant(alert.starts_at))]
        text += link_lines(alert.links())
        room -= sum(len(line) + 1 for line in text)
        if room < 0 and shown:  # a group of thousands: the body says how many it leaves out
            lines += ["", f"... and {len(payload.alerts) - shown} more alerts in this group"]
            break
        lines += text
    return [*lines, "", *link_lines([(flavor.sender, payload.external_url)])]


def _pairs(title: str, items: Iterable[tuple[str, str]]) -> list[str]:
    pairs = [f"  {k} = {v}" for k, v in sorted(items)]
    return [f"{title}:", *pairs] if pairs else []


def link_lines(links: Sequence[tuple[str, str]]) -> list[str]:
    """``Name: URL`` lines, one per link that has a URL."""
    return [f"{name}: {url}" for name, url in links if url]


def _utc(value: datetime) -> datetime:
    """``value`` in UTC, or ValueError (a 422 naming the field) for a time UTC cannot hold (year 1
    east of Greenwich, year 9999 west of it), which failed every send of the call with a 500 when
    the keys and the body were made."""
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("out of range once in UTC (years 1 to 9999)") from exc


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _digest(parts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
