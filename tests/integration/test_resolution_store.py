"""A resolution closes the notification it resolves, on both backends (SQLite, PostgreSQL).

Part of the shared store suite (the ``store`` fixture runs each test on both). A resolved alert
names the firing one's idempotency key in its ``resolves`` label (daemon/intake/alertmanager.py).
"""

from __future__ import annotations

from datetime import timedelta

from daemon.core.model import RESOLVES_LABEL, Notification, Severity
from daemon.core.routing import Matcher, Route, plans_for
from daemon.store.base import Store
from daemon.store.values import NewNotification, Outcome
from tests.integration.test_escalation_store import LADDER, LEASE, T0, deliver, outage

ROUTES = (
    Route("page", Matcher(severities=frozenset({Severity.CRITICAL})), ("email",), LADDER),
    Route("hold", Matcher(), ("email",), None),
)


def firing(n: int, severity: Severity = Severity.CRITICAL) -> NewNotification:
    notification = Notification(f"01JFIRING{n:017d}", f"alert-{n}:firing", T0, severity, f"alert {n}")
    return NewNotification(notification, plans_for(notification, ROUTES))


def resolution(n: int, severity: Severity = Severity.CRITICAL) -> NewNotification:
    labels = {RESOLVES_LABEL: f"alert-{n}:firing", "follows": f"alert-{n}:firing"}
    notification = Notification(
        f"01JRESOLVED{n:015d}",
        f"alert-{n}:resolved",
        T0,
        severity,
        f"[RESOLVED] alert {n}",
        source="test",
        labels=labels,
    )
    return NewNotification(notification, plans_for(notification, ROUTES))


async def status(store: Store, notification_id: str) -> str:
    view = await store.notification(notification_id)
    assert view is not None
    return view.status


async def test_a_resolution_stops_the_escalation_and_does_not_escalate_itself(store: Store) -> None:
    """The firing alert was paged on Slack; resolved before its SMS step fell due: no SMS, neither
    for the alert nor for its resolution, which is told once, on the first channel that takes it."""
    await outage(store)
    (alert,) = await store.accept([firing(1)], T0)
    assert await deliver(store, "slack", T0) == [alert.id]
    (done,) = await store.accept([resolution(1)], T0 + timedelta(minutes=1))
    assert await deliver(store, "slack", T0 + timedelta(minutes=1)) == [done.id]
    for channel in ("sms", "sms2", "ops"):
        assert await deliver(store, channel, T0 + timedelta(hours=1)) == []
    view = await store.notification(alert.id)
    assert view is not None
    assert [(d.channel, d.state) for d in view.deliveries] == [
        ("slack", "delivered"),
        ("sms", "superseded"),
        ("sms2", "superseded"),
        ("ops", "superseded"),
    ]


async def test_an_alert_held_through_an_outage_and_resolved_is_never_sent(store: Store) -> None:
    """The firing alert held through the outage is acknowledged by its resolution: only the
    resolution is told after recovery, never the alert after its own end."""
    await outage(store)
    (alert,) = await store.accept([firing(2, Severity.WARNING)], T0)
    assert await status(store, alert.id) == "held"
    (done,) = await store.accept([resolution(2, Severity.WARNING)], T0 + timedelta(seconds=30))
    assert (await status(store, alert.id), await status(store, done.id)) == ("acknowledged", "held")


async def test_a_resolution_before_the_first_send_supersedes_it(store: Store) -> None:
    """Pending but not yet claimed (a burst, a slow channel): the alert is not sent, its resolution is."""
    (alert,) = await store.accept([firing(3, Severity.WARNING)], T0)
    (done,) = await store.accept([resolution(3, Severity.WARNING)], T0)
    assert await deliver(store, "email", T0 + LEASE) == [done.id]
    assert await status(store, alert.id) == "acknowledged"


async def test_a_send_in_flight_that_then_fails_is_not_retried_after_the_resolution(store: Store) -> None:
    """Claimed when the resolution came (it may reach someone): it finishes, but a retry or a next
    step after it would tell of an alert that is over, after its resolution: neither happens."""
    await outage(store)
    (alert,) = await store.accept([firing(4)], T0)
    claimed = await store.claim("slack", 10, T0, T0 + LEASE)
    assert [c.notification.id for c in claimed] == [alert.id]
    (done,) = await store.accept([resolution(4)], T0)
    retry = Outcome(claimed[0].delivery.id, "retry", T0, T0, "timed out", retry_at=T0)
    await store.record([retry], T0)
    later = T0 + timedelta(hours=1)
    assert await deliver(store, "slack", later) == [done.id]
    for channel in ("sms", "sms2", "ops"):
        assert await deliver(store, channel, later) == []


async def test_a_resolution_of_an_unknown_alert_is_sent(store: Store) -> None:
    """The firing one never came (lost upstream, or before this outbox existed): tell the resolution."""
    (done,) = await store.accept([resolution(5, Severity.WARNING)], T0)
    assert await deliver(store, "email", T0) == [done.id]


async def test_a_repeated_resolution_changes_nothing(store: Store) -> None:
    """Alertmanager re-sends a resolution: the duplicate is answered with the first, nothing closed twice."""
    (alert,) = await store.accept([firing(6, Severity.WARNING)], T0)
    assert await deliver(store, "email", T0) == [alert.id]
    (done,) = await store.accept([resolution(6, Severity.WARNING)], T0)
    (again,) = await store.accept([resolution(6, Severity.WARNING)], T0)
    assert (again.id, again.duplicate) == (done.id, True)
    assert await deliver(store, "email", T0) == [done.id]


async def test_a_resolution_fails_over_instead_of_paging(store: Store) -> None:
    """Routed by an escalation, a resolution takes its channels as a failover list: the next
    channel when the first fails for good, never a step on a timer."""
    await outage(store)
    (done,) = await store.accept([resolution(7)], T0)
    assert await deliver(store, "slack", T0, kind="failed") == [done.id]
    assert await deliver(store, "sms", T0) == [done.id]
    view = await store.notification(done.id)
    assert view is not None
    assert view.plan == ("slack", "sms", "sms2", "ops")
    assert [d.step for d in view.deliveries] == [0, 1]
