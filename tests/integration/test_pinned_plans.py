"""Plans made here, not by the routes (a drill's, a catch-up's), on both backends:
a mode change gives such a notification its own plan for the new mode, and neither the routes nor a
policy reload re-plan it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon.core.health import HealthSnapshot
from daemon.core.model import Mode, Notification, Plan, ProviderState, Severity
from daemon.core.routing import Matcher, Route, plans_for
from daemon.drills import Drills
from daemon.rerouting import Rerouter
from daemon.store.base import NewNotification, Store
from daemon.store.sqlite import SqliteStore

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
        "healthy": Plan(route="recovery", mode="healthy", steps=("email",)),
        "outage": Plan(route="recovery", mode="outage", defer=True),
    }
    return NewNotification(notification(n, "backchannel"), plans, pinned=True)


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
    assert (view.status, view.route, view.plan) == ("pending", "recovery", ("email",))


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
