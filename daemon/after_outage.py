"""Smart-host mail that reached people through backup channels is still owed to its mailboxes.

The SMTP smart host answers ``250`` once a message is committed; from then on backchannel owes
it delivery to every envelope recipient, or a report to its sender (RFC 5321 §6.1,
:mod:`daemon.refusals`). During an outage the routes send a critical message through the backup
channels as text (Slack, SMS, a webhook): people are reached, their mailboxes are not. Once the
recovery is confirmed, the catch-up (:mod:`daemon.catchup`) relays each such message by email:
its own bytes, from its own envelope sender, to every envelope recipient, through the primary
email channels, held if the provider fails again first.

A message is owed when it came as mail (raw bytes and an envelope sender), went out on a channel
that is not email during the outage, is settled there (delivered, failed for good, or
acknowledged: not cancelled by an operator, not still in progress, which the recovery re-plans
to email itself), no email channel ever delivered it, and its route would have emailed it had the
provider been up (a route that sends it to a webhook in either mode changed nothing for the
outage: its mail is not owed to a mailbox). Its copy's key is derived from the
original's id alone, so the catch-up run again (a restart, a new leader, a second outage) queues
it once. No I/O: the catch-up commits what this returns.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import replace
from datetime import datetime

from daemon.core.catchup import Outage
from daemon.core.model import Mode, Notification, NotificationStatus, Plan
from daemon.core.routing import Route
from daemon.ids import new_id
from daemon.refusals import RELAY_OF_LABEL
from daemon.store.values import NewNotification, NotificationView

#: the route name of a copy's plans (``backchannel status``, the API)
ROUTE = "after-outage"
#: settled on the backup channels; an unsent one gets its healthy plan at the recovery instead
_SETTLED = frozenset(
    {NotificationStatus.DELIVERED, NotificationStatus.FAILED, NotificationStatus.ACKNOWLEDGED}
)


def owed(view: NotificationView, outage: Outage, mail_channels: Set[str], route: Route | None = None) -> bool:
    """Whether ``view``'s message is owed to its recipients' mailboxes after ``outage``.

    ``route``: the route that planned it (None: one renamed or removed since, or a follow-up's).
    """
    n = view.notification
    if n.raw is None or n.mail_from is None or not n.recipients or view.status not in _SETTLED:
        return False
    if route is not None and not _emails(route, mail_channels):
        return False
    if any(a.channel in mail_channels and a.outcome == "delivered" for a in view.attempts):
        return False
    return any(
        a.channel not in mail_channels and outage.started_at <= a.started_at <= outage.ended_at
        for a in view.attempts
    )


def _emails(route: Route, mail_channels: Set[str]) -> bool:
    """Whether ``route``'s healthy action names an email channel (an escalation iterates its own)."""
    return any(c in mail_channels for c in route.healthy or ())


def relay_key(original_id: str) -> str:
    return f"{ROUTE}:{original_id}"


def relay_copy(original: Notification, steps: tuple[str, ...], now: datetime) -> NewNotification:
    """``original`` again, by email: its bytes, envelope and arrival time, ``relay_of`` naming it."""
    notification = replace(
        original,
        id=new_id(now),
        idempotency_key=relay_key(original.id),
        labels={**original.labels, RELAY_OF_LABEL: original.id},
    )
    # should the provider fail again before it goes, held (not sent to chat a second time)
    plans: dict[Mode, Plan] = {
        "healthy": Plan(route=ROUTE, mode="healthy", steps=steps),
        "outage": Plan(route=ROUTE, mode="outage", defer=True),
    }
    return NewNotification(notification, plans, pinned=True)
