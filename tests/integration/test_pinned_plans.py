"""Plans made here, not by the routes (a drill's, a catch-up's), on both backends:
a mode change gives such a notification its own plan for the new mode, and neither the routes nor a
policy reload re-plan it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from daemon import catchup
from daemon.core.health import HealthSnapshot
from daemon.core.model import Mode, Notification, Plan, ProviderState, Severity
from daemon.core.routing import Matcher, Route, plans_for
from daemon.drills import Drills
from daemon.refusals import follow_up
from daemon.rerouting import Rerouter
from daemon.store.base import Store
from daemon.store.postgres import PostgresStore
from daemon.store.sqlite import SqliteStore
from daemon.store.values import NewNotification, Outcome
from tests.integration.conftest import StoreFactory

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = T0 + timedelta(minutes=5)
ROUTES = (Route("all", Matcher(), ("email",), ("hook",)),)
#: a reloaded policy: everything to the pager, whatever the mode
RELOADED = (Route("all", Matcher(), ("pager",), ("pager",)),)


class Clock:
    def now(self) -> datetime:
        return T0

    def monotonic(self) -> float:
        return 0.0


def notification(n: int, source: str = "api") -> Notification:
    return Notification(f"id-{n:05d}", f"key-{n}", T0, Severity.INFO, f"subject {n}", "body", source=source)


def catch_up(n: int) -> NewNotification:
    """As daemon.catchup plans one: by email when healthy, held during an outage."""
    plans: dict[Mode, Plan] = {
        "healthy": Plan(route=catchup.ROUTE, mode="healthy", steps=("email",)),
        "outage": Plan(route=catchup.ROUTE, mode="outage", defer=True),
    }
    return NewNotification(notification(n, catchup.SOURCE), plans, pinned=True)


async def enter(store: Store, state: ProviderState, rerouter: Rerouter) -> None:
    snapshot = HealthSnapshot(natural=state, since=T0)
    await store.save_provider(snapshot, None, T0)
    await rerouter.sweep(snapshot.mode)


async def test_a_drill_stays_on_its_channel_across_an_outage(store: Store) -> None:
    """A drill message still unsent when the provider fails is sent on its channel, not the routes'."""
    drills = Drills(store, lambda: ROUTES, lambda: frozenset({"email"}), Clock())
    _, sent = await drills.start()
    assert list(sent) == ["hook"]
    await enter(store, ProviderState.OUTAGE, Rerouter(store, lambda: RELOADED, Clock()))
    (claimed,) = await store.claim("hook", 10, T0, LEASE)
    assert claimed.notification.id == sent["hook"]
    assert await store.claim("pager", 10, T0, LEASE) == []
    view = await store.notification(sent["hook"])
    assert view is not None
    assert (view.route, view.plan) == ("drill", ("hook",))


async def test_a_catch_up_is_held_by_a_relapse_and_sent_by_email_after_it(store: Store) -> None:
    """A pinned plan's other mode is its own: held during the outage, email again after it; the
    routed notification beside it follows the routes."""
    rerouter = Rerouter(store, lambda: ROUTES, Clock())
    routed = notification(2)
    await store.accept([catch_up(1), NewNotification(routed, plans_for(routed, ROUTES))], T0)
    await enter(store, ProviderState.OUTAGE, rerouter)
    assert (await store.queue()).notifications == {"held": 1, "pending": 1}
    (hook,) = await store.claim("hook", 10, T0, LEASE)
    assert hook.notification.id == routed.id
    await enter(store, ProviderState.HEALTHY, rerouter)
    (email,) = await store.claim("email", 10, T0, LEASE)
    assert email.notification.id == "id-00001"
    view = await store.notification("id-00001")
    assert view is not None
    assert (view.status, view.route, view.plan) == ("pending", catchup.ROUTE, ("email",))


async def test_a_policy_reload_leaves_pinned_plans_alone(store: Store) -> None:
    """Only the routes' notifications take a reloaded policy's plans."""
    routed = notification(2)
    await store.accept([catch_up(1), NewNotification(routed, plans_for(routed, ROUTES))], T0)
    assert await Rerouter(store, lambda: RELOADED, Clock()).replan("healthy") == 1
    assert [c.notification.id for c in await store.claim("email", 10, T0, LEASE)] == ["id-00001"]
    assert [c.notification.id for c in await store.claim("pager", 10, T0, LEASE)] == [routed.id]


async def test_a_pinned_notification_in_flight_waits_for_its_send(store: Store) -> None:
    """As a routed one: a send in flight finishes on the plan it started with."""
    rerouter = Rerouter(store, lambda: ROUTES, Clock())
    await store.accept([catch_up(1)], T0)
    assert len(await store.claim("email", 10, T0, LEASE)) == 1
    await store.save_provider(HealthSnapshot(natural=ProviderState.OUTAGE, since=T0), None, T0)
    assert await store.repin("outage", T0, 10) == 0
    assert await rerouter.sweep("outage") == 0
    assert (await store.queue()).notifications == {"pending": 1}


async def test_repin_takes_its_batches(tmp_path: Path) -> None:
    """The sweep moves pinned notifications a batch at a time until none is left."""
    store = SqliteStore(tmp_path / "outbox.db")
    await store.open()
    try:
        await store.accept([catch_up(n) for n in range(7)], T0)
        await store.save_provider(HealthSnapshot(natural=ProviderState.OUTAGE, since=T0), None, T0)
        assert await store.repin("healthy", T0, 3) == 0  # not the mode in force
        assert [await store.repin("outage", T0, 3) for _ in range(4)] == [3, 3, 1, 0]
        assert (await store.queue()).notifications == {"held": 7}
    finally:
        await store.close()


async def test_a_drill_retrying_keeps_its_backoff_across_a_mode_change(store: Store) -> None:
    """The same one-channel plan in both modes: the retrying delivery moves as it is, due when it was."""
    drills = Drills(store, lambda: ROUTES, lambda: frozenset({"email"}), Clock())
    _, sent = await drills.start()
    (claimed,) = await store.claim("hook", 10, T0, LEASE)
    later = T0 + timedelta(minutes=2)
    await store.record([Outcome(claimed.delivery.id, "retry", T0, T0, "503", retry_at=later)], T0)
    await enter(store, ProviderState.OUTAGE, Rerouter(store, lambda: RELOADED, Clock()))
    assert await store.due() == {"hook": later}
    (again,) = await store.claim("hook", 10, later, later + timedelta(minutes=5))
    assert (again.delivery.id, again.delivery.attempts) == (claimed.delivery.id, 2)
    view = await store.notification(sent["hook"])
    assert view is not None
    assert [(d.channel, d.state) for d in view.deliveries] == [("hook", "in_flight")]


async def test_a_reload_leaves_a_relay_follow_up_on_the_relaying_channel(store: Store) -> None:
    """A follow-up of relayed mail waits on the channel that relayed it: a reload, even one that
    changes nothing, does not hand it (raw mail) to the routes; a mode change does, as documented."""
    original = Notification("id-00009", "key-9", T0, Severity.HIGH, "nightly job", "", raw=b"mail")
    item = follow_up("smarthost", original, ["busy@example.com"], T0)
    await store.accept([item], T0)
    assert await Rerouter(store, lambda: ROUTES, Clock()).replan("healthy") == 0
    (claimed,) = await store.claim("smarthost", 10, T0, LEASE)
    assert claimed.notification.id == item.notification.id


async def test_pinned_notifications_queued_before_the_upgrade_are_pinned(make_store: StoreFactory) -> None:
    """Migration 0007 pins the drill messages and catch-ups already queued when it runs."""
    store = make_store()
    await store.open()
    drills = Drills(store, lambda: ROUTES, lambda: frozenset({"email"}), Clock())
    _, sent = await drills.start()
    await store.accept([catch_up(1)], T0)
    await store.close()
    _downgrade(store)  # as a release without the column left them
    store = make_store()
    await store.open()  # migrates again
    try:
        await enter(store, ProviderState.OUTAGE, Rerouter(store, lambda: RELOADED, Clock()))
        assert (await store.queue()).notifications == {"held": 1, "pending": 1}
        (claimed,) = await store.claim("hook", 10, T0, LEASE)
        assert claimed.notification.id == sent["hook"]
        await enter(store, ProviderState.HEALTHY, Rerouter(store, lambda: RELOADED, Clock()))
        assert [c.notification.id for c in await store.claim("email", 10, T0, LEASE)] == ["id-00001"]
    finally:
        await store.close()


def _downgrade(store: Store) -> None:
    # a release without the column had none of the later migrations' indexes on it either
    statements = [
        "DROP INDEX IF EXISTS notifications_unsent",
        "DROP INDEX IF EXISTS notifications_unsent_mode",
        "ALTER TABLE notifications DROP COLUMN pinned",
        "DELETE FROM schema_migrations WHERE version IN (7, 10)",
    ]
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            for statement in statements:
                conn.execute(statement)
    else:
        assert isinstance(store, PostgresStore)
        with psycopg.connect(store._url, autocommit=True) as pg:
            for statement in statements:
                pg.execute(statement)
