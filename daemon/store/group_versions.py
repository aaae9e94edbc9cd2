"""A new version of an Alertmanager or Grafana alert group, as the stores commit it: pure, given the
group's latest stored version (``sqlite_accept_tx``, ``postgres_accept_tx`` read it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from daemon.core.model import (
    FOLLOWS_LABEL,
    GROUP_ACKNOWLEDGED_LABEL,
    GROUP_FIRING_LABEL,
    RESOLVES_LABEL,
    Notification,
    Plan,
)
from daemon.core.routing import told_once
from daemon.store.codec import GROUP_UPDATE, RESOLUTION


@dataclass(frozen=True, slots=True)
class GroupVersion:
    """What a new version of an alert group needs of the group's latest version."""

    id: str
    idempotency_key: str
    labels: Mapping[str, str]
    acknowledged_by: str | None
    acknowledged_via: str | None


def repeats(notification: Notification, latest: GroupVersion | None) -> bool:
    """Whether a version of a group says nothing the group's latest version did not: the same firing
    alerts, none resolved. Alertmanager re-sends ``[A]`` after ``[A, B resolved]`` (it dropped B
    once it told of it): another key, but nothing to tell or page for."""
    new = notification.labels.get(GROUP_FIRING_LABEL)
    if latest is None or new is None or new.endswith("+"):
        return False
    return latest.labels.get(GROUP_FIRING_LABEL, "").rstrip("+") == new


def next_version(
    notification: Notification, plan: Plan, latest: GroupVersion | None
) -> tuple[Notification, Plan]:
    """A new version of a group as the store commits it, given the group's latest version.

    - The group's resolution threads under the latest version, where the group was last told (the
      version that fired with exactly its alerts, which the mapping names, is gone when some
      resolved before: Alertmanager then drops them from the group).
    - Taken on: if a person acknowledged the latest version (or it carried such an acknowledgement
      itself), the new one says who and is told once, as a resolution is, instead of paging again
      for a group someone already handles (an alert resolved or joined meanwhile). Not after
      the group resolved: its next firing is a new incident and pages, whoever acknowledged the
      resolution (an admin closing it by the API while its email was retried).
    """
    if latest is None:
        return notification, plan
    if RESOLVES_LABEL in notification.labels:
        return replace(
            notification, labels={**notification.labels, FOLLOWS_LABEL: latest.idempotency_key}
        ), plan
    if RESOLVES_LABEL in latest.labels:
        return notification, plan
    taken = latest.labels.get(GROUP_ACKNOWLEDGED_LABEL)
    if latest.acknowledged_by is not None and latest.acknowledged_via not in (RESOLUTION, GROUP_UPDATE):
        taken = f"{latest.acknowledged_by} via {latest.acknowledged_via}"
    if taken is None:
        return notification, plan
    return replace(notification, labels={**notification.labels, GROUP_ACKNOWLEDGED_LABEL: taken}), told_once(
        plan
    )
