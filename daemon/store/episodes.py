"""An alert that fires again under the key of a firing already resolved. Pure: the stores look up.

The alert intakes key a firing ``<source>:<fingerprint>:<startsAt>:firing`` and its resolution the
same with ``:resolved`` (:mod:`daemon.intake.alertmanager`), so that every re-send of one firing is
a duplicate. But Alertmanager resolves an alert whose sender went quiet past its ``endsAt`` (a
network cut between Prometheus and Alertmanager), and when the sender reports it again Prometheus
keeps its ``startsAt``: the new firing arrives under the first one's key. Nothing in the payload
tells the two apart; the store does, from what it holds. A firing whose key is stored is a repeat
while that firing is open, and a new *episode* once it is over (its resolution is stored, or a later
version of its alert group is a resolution). Episode ``n`` > 1 is stored under ``<key>~<n>``, its
resolution likewise, and the resolution names the episode it resolves and follows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from daemon.core.model import FOLLOWS_LABEL, RESOLVES_LABEL, Notification
from daemon.store.base import NewNotification

#: how the alert intakes' keys end (``daemon.intake.alertmanager._key``)
FIRING, RESOLVED = ":firing", ":resolved"
#: between a key and its episode's number
SEPARATOR = "~"
#: the label the alert intakes set to a notification's alert status
STATUS_LABEL = "alert_status"


def key(first: str, episode: int) -> str:
    """The key of the ``episode``-th episode of what was first stored under ``first``."""
    return first if episode <= 1 else f"{first}{SEPARATOR}{episode}"


def may_recur(item: NewNotification) -> bool:
    """A firing from an alert intake (not a key an API client chose), which may be a new episode
    when its key is stored already."""
    n = item.notification
    return (
        item.digest is None
        and n.labels.get(STATUS_LABEL) == "firing"
        and RESOLVES_LABEL not in n.labels
        and n.idempotency_key.endswith(FIRING)
    )


def resolution_key(firing_key: str, episode: int) -> str:
    """The key the resolution of a firing's ``episode`` is stored under."""
    return key(firing_key.removesuffix(FIRING) + RESOLVED, episode)


def ends(labels: Mapping[str, str]) -> bool:
    """Whether a version of an alert group with these labels ends the group's episode."""
    return RESOLVES_LABEL in labels


def resolving(notification: Notification, episode: int) -> Notification:
    """A resolution (``resolves`` set) re-keyed for the ``episode`` its firing is in."""
    if episode <= 1:
        return notification
    labels = dict(notification.labels)
    first = labels[RESOLVES_LABEL]
    labels[RESOLVES_LABEL] = key(first, episode)
    if labels.get(FOLLOWS_LABEL) == first:
        labels[FOLLOWS_LABEL] = labels[RESOLVES_LABEL]
    return replace(notification, idempotency_key=key(notification.idempotency_key, episode), labels=labels)


def firing(notification: Notification, episode: int) -> Notification:
    """A firing re-keyed for its ``episode``."""
    return replace(notification, idempotency_key=key(notification.idempotency_key, episode))
