"""The re-plan a policy reload owes, kept in the store until it is done, on both backends: a run
killed or stopped before its re-plan walked every unsent notification leaves it to the next start
with the same routes (the daemon killed for real: tests/acceptance/test_kill9_replan.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemon.core.model import Notification, Severity
from daemon.core.routing import Matcher, Route, plans_for
from daemon.rerouting import Rerouter
from daemon.store.base import NewNotification, Store
from tests.integration.conftest import StoreFactory

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROUTES = (Route("all", Matcher(), ("email",), ("hook",)),)
#: a reloaded policy: everything to the pager, whatever the mode
RELOADED = (Route("all", Matcher(), ("pager",), ("pager",)),)


class Clock:
    def now(self) -> datetime:
        return T0

    def monotonic(self) -> float:
        return 0.0


async def planned_by_routes(store: Store, n: int = 1) -> str:
    """An unsent notification, planned by ``ROUTES`` (email while healthy)."""
    notification = Notification(f"id-{n:05d}", f"key-{n}", T0, Severity.INFO, f"subject {n}", "body")
    await store.accept([NewNotification(notification, plans_for(notification, ROUTES))], T0)
    return notification.id


async def plan_of(store: Store, notification_id: str) -> tuple[str, ...]:
    view = await store.notification(notification_id)
    assert view is not None
    return view.plan


async def test_an_owed_replan_is_kept_until_settled(store: Store) -> None:
    """Each routes' digest is owed once however often it is owed, until settled; settling one
    leaves the others owed."""
    assert await store.owed_replans() == set()
    await store.owe_replan("routes-a", T0)
    await store.owe_replan("routes-b", T0)
    await store.owe_replan("routes-a", T0 + timedelta(seconds=1))
    assert await store.owed_replans() == {"routes-a", "routes-b"}
    await store.settle_replans(["routes-a", "routes-never-owed"])
    assert await store.owed_replans() == {"routes-b"}
    await store.settle_replans([])
    assert await store.owed_replans() == {"routes-b"}


async def test_an_owed_replan_outlives_the_run_that_owed_it(make_store: StoreFactory) -> None:
    """Owed by one run of the store and never settled: the next run (or node) still finds it."""
    first = make_store()
    await first.open()
    await first.owe_replan("routes-a", T0)
    await first.close()
    second = make_store()
    await second.open()
    try:
        assert await second.owed_replans() == {"routes-a"}
    finally:
        await second.close()


async def test_a_replan_cut_short_is_resumed_by_a_run_with_the_same_routes(store: Store) -> None:
    """A reload's re-plan stopped before the end stays owed: a run with other routes leaves it,
    one with the reloaded routes re-plans the backlog and settles it."""
    nid = await planned_by_routes(store)
    reloaded = Rerouter(store, lambda: RELOADED, Clock(), digest=lambda: "reloaded")
    await reloaded.owe()
    reloaded.stopping = lambda: True  # a SIGTERM before the first page
    assert await reloaded.replan("healthy") == 0
    assert await store.owed_replans() == {"reloaded"}
    assert not await Rerouter(store, lambda: ROUTES, Clock(), digest=lambda: "old").resume()
    restarted = Rerouter(store, lambda: RELOADED, Clock(), digest=lambda: "reloaded")
    assert await restarted.resume()
    assert await restarted.replan("healthy") == 1
    assert await plan_of(store, nid) == ("pager",)
    assert await store.owed_replans() == set()


async def test_a_reload_in_the_middle_of_a_replan_keeps_it_owed(store: Store) -> None:
    """Routes reloaded while the re-plan walked: the pages before used the old ones, so the walk
    settles nothing (the reload's own re-plan does)."""
    await planned_by_routes(store)
    digest = ["reloaded"]
    rerouter = Rerouter(store, lambda: RELOADED, Clock(), digest=lambda: digest[0])
    await rerouter.owe()
    rerouter.progress = lambda: digest.__setitem__(0, "reloaded-again")
    assert await rerouter.replan("healthy") == 1
    assert await store.owed_replans() == {"reloaded"}
    await rerouter.owe()
    await rerouter.replan("healthy")
    assert await store.owed_replans() == set()
