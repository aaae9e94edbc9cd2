"""Vendors' status callbacks in the outbox, on both backends (SQLite, PostgreSQL).

Part of the shared store suite (the ``store`` fixture runs each test on both). One SMS digest
carries several notifications, each with its own delivery and all with the digest's MessageSid:
a callback about that message is about every one of them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemon.core.model import Notification, Severity
from daemon.core.routing import Matcher, Route, plans_for
from daemon.store.base import Store
from daemon.store.values import Callback, NewNotification, Outcome

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = T0 + timedelta(minutes=1)
ROUTES = (Route("page", Matcher(), ("sms", "email"), None),)
DIGEST = "SMdigest1,SMdigest2"  # a digest long enough to go out in two parts


def note(n: int) -> NewNotification:
    notification = Notification(f"id-{n:05d}", f"key-{n}", T0, Severity.CRITICAL, f"subject {n}")
    return NewNotification(notification, plans_for(notification, ROUTES))


async def sent_by_sms(store: Store, remote_ids: list[str]) -> None:
    """One notification per remote id, each delivered by SMS with that id."""
    await store.accept([note(n) for n in range(len(remote_ids))], T0)
    claimed = await store.claim("sms", len(remote_ids), T0, LEASE)
    outcomes = [
        Outcome(c.delivery.id, "delivered", T0, T0, "queued", remote_id=remote_id)
        for c, remote_id in zip(claimed, remote_ids, strict=True)
    ]
    await store.record(outcomes, T0)


async def trail(store: Store, notification_id: str) -> tuple[str, list[str]]:
    view = await store.notification(notification_id)
    assert view is not None
    return view.status, [a.outcome for a in view.attempts]


async def test_undelivered_digest_fails_over_every_notification_it_carried(store: Store) -> None:
    """An "undelivered" for a digest's part fails every SMS step it carried; another message's stays."""
    await sent_by_sms(store, [DIGEST, DIGEST, DIGEST, "SMother"])
    assert await store.record_callback(Callback("sms", "SMdigest2", False, "30003 unreachable", T0))
    moved_on = await store.claim("email", 10, T0, LEASE)
    assert sorted(c.notification.id for c in moved_on) == ["id-00000", "id-00001", "id-00002"]
    assert {c.delivery.step for c in moved_on} == {1}
    for n in range(3):
        assert await trail(store, f"id-{n:05d}") == ("pending", ["delivered", "callback:failed"])
    assert await trail(store, "id-00003") == ("delivered", ["delivered"])


async def test_repeated_undelivered_callback_fails_over_once(store: Store) -> None:
    """The same "undelivered" twice: recorded twice on each delivery, each plan moves on only once."""
    await sent_by_sms(store, [DIGEST, DIGEST])
    for _ in range(2):
        assert await store.record_callback(Callback("sms", DIGEST, False, "30005 unknown", T0))
    assert len(await store.claim("email", 10, T0, LEASE)) == 2
    for n in range(2):
        expected = ("pending", ["delivered", "callback:failed", "callback:failed"])
        assert await trail(store, f"id-{n:05d}") == expected


async def test_status_callbacks_are_recorded_on_every_delivery_and_change_nothing(store: Store) -> None:
    """ "sent" then "delivered" for a digest: each notification's trail shows both; nothing is resent."""
    await sent_by_sms(store, [DIGEST, DIGEST])
    assert await store.record_callback(Callback("sms", "SMdigest1", None, "sent", T0))
    assert await store.record_callback(Callback("sms", "SMdigest1", True, "delivered", T0))
    assert not await store.record_callback(Callback("sms", "SMdigest", False, "no such message", T0))
    assert await store.claim("email", 10, T0, LEASE) == []
    for n in range(2):
        expected = ("delivered", ["delivered", "callback:status", "callback:delivered"])
        assert await trail(store, f"id-{n:05d}") == expected
