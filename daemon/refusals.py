"""What a relay's refusals become: a follow-up for recipients refused for now, a report for the sender.

A message from the SMTP smart host was answered 250 when it was committed, so from then on
backchannel owes it what any mail server owes (RFC 5321 §6.1): delivery to every recipient, or a
delivery status notification to its sender. The email channel relays it and reports the
recipients its server refused (:class:`~channels.base.Refusal`); this module turns them into new
notifications, which the deliverer commits before it records the send's outcome:

- recipients refused **for now** (4xx) while others took the message: a *follow-up*, the same
  bytes from the same envelope sender to those recipients only, retried with the usual backoff,
  so nobody who has the message gets it again;
- recipients refused **for now** when every recipient was refused and some of them for good: the
  same follow-up (the message fails for good, so the others are reported at once);
- a notification of backchannel's own (no raw bytes, no sender to report to) gets the follow-up
  alone, rendered again for those recipients: a full mailbox beside an accepting one is not dropped;
- recipients refused **for good** (5xx), or all of them once the message has failed (the server
  refused its sender or its content, or retries ran out): a *report* (:mod:`channels.dsn`) to the
  envelope sender, from the null sender, unless the original came from the null sender itself
  (RFC 5321 §6.1: bounce loops) or bounces are turned off.

Both are sent by the channel that relayed the original, in either mode (one still waiting when
the mode changes is re-planned by the routes, as every unsent notification is; a policy reload
leaves it on the relaying channel: :func:`on_relay_plan`). Both keys are derived
from the original's id and the recipients concerned, so a send repeated after a crash (its outcome
not yet recorded) finds them committed already and makes no second one. A step that fails for
good while the plan goes on to another email channel calls for neither: that channel relays the
whole message again (the deliverer asks :class:`~channels.base.RelaysMail`). No I/O: the caller
commits what this returns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from channels.base import ChannelError, Receipt, Refusal
from channels.dsn import delivery_report
from daemon.core.model import Mode, Notification, Plan, Severity
from daemon.ids import new_id
from daemon.store.values import NewNotification

#: a follow-up names the notification whose recipients it carries on with
RELAY_OF_LABEL = "relay_of"
#: a report names the notification it reports on
BOUNCE_OF_LABEL = "bounce_of"
#: the route names of the plans made here for a follow-up and a report
_FOLLOW_UP_ROUTE, _REPORT_ROUTE = "relay", "bounce"
#: the reports' source (routes and the API can tell them apart)
BOUNCE_SOURCE = "bounce"


@dataclass(frozen=True, slots=True)
class Bounces:
    """Whether senders are told, and in whose name."""

    enabled: bool = True
    #: this host's name (RFC 3464 ``Reporting-MTA``): the SMTP intake's greeting name
    reporter: str = "localhost"
    #: the reports' ``From``; MAILER-DAEMON at ``reporter`` unless configured
    from_address: str | None = None

    @property
    def sender(self) -> str:
        return self.from_address or f"MAILER-DAEMON@{self.reporter}"


def consequences(
    channel: str,
    notification: Notification,
    result: Receipt | ChannelError,
    *,
    failed: bool,
    bounces: Bounces,
    now: datetime,
) -> list[NewNotification]:
    """The follow-up and the report one send of ``notification`` calls for (often none).

    ``failed``: the send's outcome fails this step for good (a retry reports nothing yet).
    """
    if isinstance(result, ChannelError) and not failed:  # retried: nothing is settled yet
        return []
    if isinstance(result, Receipt) or result.permanent:
        # delivered to some, or failed for good: those refused for now are followed up
        later = [r.recipient for r in result.refused if not r.permanent]
        lost = [r for r in result.refused if r.permanent]
    else:  # retries ran out: every recipient is reported, those refused for now too
        later, lost = [], list(result.refused)
    items = [follow_up(channel, notification, later, now)] if later else []
    # only relayed mail has a sender to answer to (a notification of ours has ``mail_from`` None)
    if lost and bounces.enabled and notification.raw is not None and notification.mail_from:
        items.append(report(channel, notification, lost, bounces, now))
    return items


def follow_up(
    channel: str, original: Notification, recipients: Sequence[str], now: datetime
) -> NewNotification:
    """The original's bytes and envelope sender (or a notification of ours), to ``recipients`` only.

    It keeps the original's ``created_at`` (when the message arrived: a later report's
    ``Arrival-Date``) and its labels, with ``relay_of`` naming the original.
    """
    notification = replace(
        original,
        id=new_id(now),
        idempotency_key=_key("relay", original.id, recipients),
        recipients=tuple(recipients),
        labels={**original.labels, RELAY_OF_LABEL: original.id},
    )
    return NewNotification(notification, _pinned(channel, _FOLLOW_UP_ROUTE))


def report(
    channel: str, original: Notification, failed: Sequence[Refusal], bounces: Bounces, now: datetime
) -> NewNotification:
    """The delivery status notification to ``original``'s envelope sender, sent from ``<>``."""
    assert original.raw is not None
    assert original.mail_from
    notification_id = new_id(now)
    raw = delivery_report(
        original=original.raw,
        failed=failed,
        to=original.mail_from,
        reporter=bounces.reporter,
        from_address=bounces.sender,
        arrived_at=original.created_at,
        now=now,
        message_id=f"<{notification_id}@backchannel>",
    )
    notification = Notification(
        id=notification_id,
        idempotency_key=_key("bounce", original.id, [r.recipient for r in failed]),
        created_at=now,
        severity=Severity.INFO,
        subject=f"Undelivered: {original.subject}",
        body="\n".join(f"{r.recipient}: {r.reply}" for r in failed),
        source=BOUNCE_SOURCE,
        recipients=(original.mail_from,),
        labels={BOUNCE_OF_LABEL: original.id},
        mail_from="",  # the null sender: a report that fails is never reported on
        raw=raw,
    )
    return NewNotification(notification, _pinned(channel, _REPORT_ROUTE))


def on_relay_plan(notification: Notification, plan: Plan) -> bool:
    """Whether ``notification`` is a follow-up or report still on the plan made for it here (the
    relaying channel): a policy reload leaves it there; a mode change gives it to the routes."""
    relayed = RELAY_OF_LABEL in notification.labels or BOUNCE_OF_LABEL in notification.labels
    return relayed and plan.route in (_FOLLOW_UP_ROUTE, _REPORT_ROUTE)


def made_of(notification: Notification) -> tuple[str, str]:
    """Whether ``notification`` is a ``report`` or a ``follow-up``, and of which notification."""
    if BOUNCE_OF_LABEL in notification.labels:
        return "report", notification.labels[BOUNCE_OF_LABEL]
    return "follow-up", notification.labels[RELAY_OF_LABEL]


def _pinned(channel: str, route: str) -> dict[Mode, Plan]:
    """One step, the relaying channel, in both modes: what the sender's mail server can read."""
    return {mode: Plan(route=route, mode=mode, steps=(channel,)) for mode in ("healthy", "outage")}


def _key(kind: str, original_id: str, recipients: Sequence[str]) -> str:
    """One per original and set of recipients, whatever their order or case."""
    text = "\0".join([original_id, *sorted({r.lower() for r in recipients})])
    return f"{kind}:{hashlib.sha256(text.encode('utf-8', errors='surrogateescape')).hexdigest()}"
