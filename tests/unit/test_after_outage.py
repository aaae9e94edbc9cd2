"""Which smart-host messages are still owed to their mailboxes after an outage, and their copies."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from daemon.after_outage import owed, relay_copy, relay_key
from daemon.core.catchup import Outage
from daemon.core.model import Notification, Severity
from daemon.core.routing import Matcher, Route
from daemon.refusals import RELAY_OF_LABEL
from daemon.store.values import AttemptView, NotificationView

T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)
OUTAGE = Outage(T0, T0 + timedelta(hours=1))
MAIL = frozenset({"email", "second-provider"})
DURING, BEFORE, AFTER = T0 + timedelta(minutes=5), T0 - timedelta(minutes=5), T0 + timedelta(hours=2)
RAW = b"From: app@example.com\r\nTo: a@example.com\r\nSubject: db down\r\n\r\nbody\r\n"
MESSAGE = Notification(
    id="01HQ0000000000000000000001",
    idempotency_key="smtp:abc",
    created_at=T0,
    severity=Severity.CRITICAL,
    subject="db down",
    source="smtp",
    recipients=("a@example.com", "b@example.com"),
    labels={"importance": "high"},
    mail_from="app@example.com",
    raw=RAW,
)


def _view(
    *attempts: tuple[str, datetime, str], status: str = "delivered", n: Notification = MESSAGE
) -> NotificationView:
    trail = tuple(
        AttemptView(i, channel, 1, at, at, outcome, None) for i, (channel, at, outcome) in enumerate(attempts)
    )
    return NotificationView(n, status, "critical", "outage", ("hook",), (), trail)


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (_view(("hook", DURING, "delivered")), True),
        (_view(("slack", DURING, "delivered"), ("sms", DURING, "delivered")), True),
        # failed for good on the backup channel: the mailbox is all that is left
        (_view(("hook", DURING, "failed"), status="failed"), True),
        # acknowledged on chat: the recipients still never had the message
        (_view(("hook", DURING, "delivered"), status="acknowledged"), True),
        # an email channel delivered it: in a mailbox already (the provider, or a second one)
        (_view(("hook", DURING, "delivered"), ("email", AFTER, "delivered")), False),
        (_view(("second-provider", DURING, "delivered"), status="delivered"), False),
        (_view(("email", BEFORE, "delivered"), ("hook", DURING, "delivered")), False),
        # an email attempt that failed does not settle it
        (_view(("email", BEFORE, "retry"), ("hook", DURING, "delivered")), True),
        # sent on chat outside the outage: an ordinary route's choice, not the outage's
        (_view(("hook", BEFORE, "delivered")), False),
        (_view(("hook", AFTER, "delivered")), False),
        # still in progress, held or cancelled: the recovery re-plans it, or an operator stopped it
        (_view(("hook", DURING, "retry"), status="pending"), False),
        (_view(status="held"), False),
        (_view(("hook", DURING, "delivered"), status="cancelled"), False),
        # not mail: a notification from the API or a webhook has no bytes and no sender
        (_view(("hook", DURING, "delivered"), n=replace(MESSAGE, raw=None, mail_from=None)), False),
    ],
)
def test_owed(view: NotificationView, expected: bool) -> None:
    assert owed(view, OUTAGE, MAIL) is expected


def test_a_message_whose_route_never_emails_is_not_owed() -> None:
    """``healthy: [hook]``: the route sends it to the webhook in either mode, never to a mailbox."""
    hook_only = Route("critical", Matcher(), healthy=("hook",), outage=("hook",))
    both = Route("critical", Matcher(), healthy=("hook", "second-provider"), outage=("hook",))
    view = _view(("hook", DURING, "delivered"))
    assert not owed(view, OUTAGE, MAIL, hook_only)
    assert owed(view, OUTAGE, MAIL, both)
    assert owed(view, OUTAGE, MAIL, None)  # a route renamed or removed since: owed as it came


def test_a_message_from_the_null_sender_is_owed_too() -> None:
    """A report (``MAIL FROM:<>``) that went to chat still belongs in its addressee's mailbox."""
    report = replace(MESSAGE, mail_from="")
    assert owed(_view(("hook", DURING, "delivered"), n=report), OUTAGE, MAIL)


def test_the_copy_is_the_message_by_email_held_if_the_provider_fails_again() -> None:
    now = T0 + timedelta(hours=1, seconds=10)
    item = relay_copy(MESSAGE, ("email",), now)
    copy = item.notification
    assert (copy.raw, copy.mail_from, copy.recipients) == (RAW, MESSAGE.mail_from, MESSAGE.recipients)
    assert copy.created_at == MESSAGE.created_at  # when it arrived (a later report's Arrival-Date)
    assert copy.id != MESSAGE.id and copy.idempotency_key == relay_key(MESSAGE.id)
    assert copy.labels == {"importance": "high", RELAY_OF_LABEL: MESSAGE.id}
    assert item.pinned
    assert item.plans["healthy"].steps == ("email",)
    assert item.plans["outage"].defer


def test_the_key_is_the_same_whenever_the_copy_is_made() -> None:
    """Two runs (a restart, a new leader) make copies with one key: the store keeps the first."""
    first = relay_copy(MESSAGE, ("email",), T0)
    second = relay_copy(MESSAGE, ("email",), T0 + timedelta(days=1))
    assert first.notification.idempotency_key == second.notification.idempotency_key
