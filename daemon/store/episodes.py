"""An alert that fires again under the key of a firing already resolved. Pure: the stores look up.

The alert intakes key a firing ``<source>:<fingerprint>:<startsAt>:firing`` and its resolution the
same with ``:resolved`` (:mod:`daemon.intake.alertmanager`), so that every re-send of one firing is
a duplicate. But Alertmanager resolves an alert whose sender went quiet past its ``endsAt`` (a
network cut between Prometheus and Alertmanager), and when the sender reports it again Prometheus
keeps its ``startsAt``: the new firing arrives under the first one's key. Nothing in the payload
tells the two apart; the store does, from what it holds and in which order it stored it.

Each key is a series of *episodes*: the first stored under the key itself, episode ``n`` > 1 under
``<key>~<n>``. A firing whose key is stored repeats its latest episode while that episode is open,
and is the next episode once it is over: a resolution of it was stored after it (per alert), or a
later version of its alert group is a resolution (per group). A resolution whose key is stored
repeats its latest episode unless what it resolves fired again after that one (per group: unless
the group's latest version fires), and is the next episode then. A resolution names the latest
episode of the firing it resolves in ``resolves`` and ``follows``. The order matters, not only
what is stored: a resolution of a firing the store never saw (lost, or sent before backchannel
listened) ends nothing stored after it, and a group version answered as a repeat (never stored)
still has its resolution told in each episode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from daemon.core.model import FOLLOWS_LABEL, RESOLVES_LABEL, Notification
from daemon.store.values import NewNotification

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


def resolves(item: NewNotification) -> str | None:
    """The first key of the firing a resolution from an alert intake resolves; None for anything
    else (a firing, or a key an API client chose)."""
    n = item.notification
    if item.digest is not None or not n.idempotency_key.endswith(RESOLVED):
        return None
    return n.labels.get(RESOLVES_LABEL)


def resolution_of(firing_key: str) -> str:
    """The key a firing's resolution is first stored under."""
    return firing_key.removesuffix(FIRING) + RESOLVED


def ends(labels: Mapping[str, str]) -> bool:
    """Whether a version of an alert group with these labels ends the group's episode."""
    return RESOLVES_LABEL in labels


def resolving(notification: Notification, episode: int, resolved: int) -> Notification:
    """A resolution (``resolves`` set) keyed as the ``episode``-th under its key, resolving the
    ``resolved``-th episode of its firing (which it follows, as it followed the first)."""
    if episode <= 1 and resolved <= 1:
        return notification
    labels = dict(notification.labels)
    first = labels[RESOLVES_LABEL]
    labels[RESOLVES_LABEL] = key(first, resolved)
    if labels.get(FOLLOWS_LABEL) == first:
        labels[FOLLOWS_LABEL] = labels[RESOLVES_LABEL]
    return replace(notification, idempotency_key=key(notification.idempotency_key, episode), labels=labels)


def firing(notification: Notification, episode: int) -> Notification:
    """A firing re-keyed for its ``episode``."""
    return replace(notification, idempotency_key=key(notification.idempotency_key, episode))
