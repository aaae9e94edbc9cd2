"""The re-plan a policy reload owes, kept in the store until it is done, on both backends: a run
killed or stopped before its re-plan walked every unsent notification leaves it to the next start
with the same routes (the daemon killed for real: tests/acceptance/test_kill9_replan.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from daemon import rerouting
from daemon.core.model import Notification, Plan, ProviderState, Severity
from daemon.core.routing import Matcher, Route, plans_for
from daemon.rerouting import Rerouter
from daemon.store.base import Store, StoreUnavailable
from daemon.store.values import NewNotification
from tests.integration.conftest import StoreFactory

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROUTES = (Route("all", Matcher(), ("email",), ("hook",)),)
#: a reloaded policy: everything to the pager, whatever the mode
RELOADED = (Route("all", Matcher(), ("pager",), ("pager",)),)
#: the routes, with an action of their own while the provider's state is unknown
OVERLAID = (Route("all", Matcher(), ("email",), ("hook",), unknown=("pager",)),)

Step = Callable[[], Awaitable[None]]


class Paced:
    """The real store, with something happening before a walk reads its next page (a reload, a
    change of state), before a settle is written or once the planned routes are read; and owes
    refused, as a store that cannot commit refuses them."""

    def __init__(self, store: Store) -> None:
        self._store = store
        #: awaited, one each, before the pages after the first
        self.between_pages: list[Step] = []
        self.before_settle: Step | None = None
        self.after_planned_read: Step | None = None
        #: the next owes refused
        self.refused_owes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def unsent(self, after_id: str, limit: int) -> list[tuple[Notification, Plan]]:
        if after_id and self.between_pages:
            await self.between_pages.pop(0)()
        return await self._store.unsent(after_id, limit)

    async def settle_replans(self, routes: Collection[str]) -> None:
        if self.before_settle is not None:
            await self.before_settle()
        await self._store.settle_replans(routes)

    async def planned_routes(self) -> str | None:
        planned = await self._store.planned_routes()
        if self.after_planned_read is not None:
            await self.after_planned_read()
        return planned

    async def owe_replan(self, routes: str, now: datetime) -> None:
        if self.refused_owes:
            self.refused_owes -= 1
            raise StoreUnavailable("the store could not commit: owe refused by the test")
        await self._store.owe_replan(routes, now)


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
    """A reload's re-plan stopped before the end stays owed: a run with other routes (the file
    put back) leaves it and re-plans by its own, one with the reloaded routes re-plans the backlog
    and settles it."""
    nid = await planned_by_routes(store)
    reloaded = Rerouter(store, lambda: RELOADED, Clock(), digest=lambda: "reloaded")
    await reloaded.owe()
    reloaded.stopping = lambda: True  # a SIGTERM before the first page
    assert await reloaded.replan("healthy") == 0
    assert await store.owed_replans() == {"reloaded"}
    put_back = Rerouter(store, lambda: ROUTES, Clock(), digest=lambda: "old")
    assert not await put_back.resume()  # a node taking the lead leaves the backlog alone
    assert await put_back.resume(started=True)
    assert await put_back.replan("healthy") == 0  # still planned by them
    assert await store.owed_replans() == {"reloaded"}
    restarted = Rerouter(store, lambda: RELOADED, Clock(), digest=lambda: "reloaded")
    assert await restarted.resume()
    assert await restarted.replan("healthy") == 1
    assert await plan_of(store, nid) == ("pager",)
    assert await store.owed_replans() == set()
    assert await store.planned_routes() == "reloaded"
    again = Rerouter(store, lambda: RELOADED, Clock(), digest=lambda: "reloaded")
    assert not await again.resume(started=True)


async def test_a_start_with_other_routes_than_the_backlog_was_planned_by_replans_it(
    make_store: StoreFactory,
) -> None:
    """The file edited while the daemon was stopped (or a reload whose owed re-plan a crash kept
    from being stored): the next start owes the re-plan a reload would have owed. A new store takes
    the routes of its first run, owing nothing; a start with the same routes owes nothing."""
    first = make_store()
    await first.open()
    try:
        assert await first.planned_routes() is None
        first_run = Rerouter(first, lambda: ROUTES, Clock(), digest=lambda: "routes")
        assert not await first_run.resume(started=True)
        assert await first.planned_routes() == "routes"
        assert await first.owed_replans() == set()
        nid = await planned_by_routes(first)
    finally:
        await first.close()
    again = make_store()
    await again.open()
    try:
        same = Rerouter(again, lambda: ROUTES, Clock(), digest=lambda: "routes")
        assert not await same.resume(started=True)
        edited = Rerouter(again, lambda: RELOADED, Clock(), digest=lambda: "edited")
        assert not await edited.resume()  # taking the lead: not what a start compares
        assert await edited.resume(started=True)
        assert (await again.owed_replans(), await again.planned_routes()) == ({"edited"}, "edited")
        assert await edited.replan("healthy") == 1
        assert await plan_of(again, nid) == ("pager",)
        assert await again.owed_replans() == set()
    finally:
        await again.close()


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


async def test_a_replan_owed_again_while_a_walk_runs_is_left_to_the_next_walk(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider enters unknown in the middle of a walk, and the re-plan it owes is stored: the
    pages walked before kept the plans of before, so that walk does not settle it; the next does."""
    monkeypatch.setattr(rerouting, "BATCH", 1)
    first, second = await planned_by_routes(store, 1), await planned_by_routes(store, 2)
    paced, state = Paced(store), [ProviderState.HEALTHY]
    rerouter = Rerouter(cast(Store, paced), lambda: OVERLAID, Clock(), lambda: state[0], lambda: "routes")

    async def into_unknown() -> None:  # Daemon._overlaid, its owe done before the next page
        state[0] = ProviderState.UNKNOWN
        await rerouter.owe()

    await rerouter.owe()
    paced.between_pages = [into_unknown]
    await rerouter.replan("healthy")
    assert (await plan_of(store, first), await plan_of(store, second)) == (("email",), ("pager",))
    assert await store.owed_replans() == {"routes"}
    await rerouter.replan("healthy")
    assert await plan_of(store, first) == ("pager",)
    assert await store.owed_replans() == set()


async def test_a_walk_with_a_page_planned_by_other_routes_settles_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reloaded to other routes and back between pages (their owes not stored yet): the walk
    began and ended with the same routes, but a page was planned by the others: still owed."""
    monkeypatch.setattr(rerouting, "BATCH", 1)
    ids = [await planned_by_routes(store, n) for n in (1, 2, 3)]
    paced, routes = Paced(store), [("reloaded", RELOADED)]
    rerouter = Rerouter(cast(Store, paced), lambda: routes[0][1], Clock(), digest=lambda: routes[0][0])

    def reload(to: tuple[str, tuple[Route, ...]]) -> Step:
        async def step() -> None:
            routes[0] = to

        return step

    await rerouter.owe()
    paced.between_pages = [reload(("old", ROUTES)), reload(("reloaded", RELOADED))]
    await rerouter.replan("healthy")
    assert [await plan_of(store, nid) for nid in ids] == [("pager",), ("email",), ("pager",)]
    assert await store.owed_replans() == {"reloaded"}
    await rerouter.replan("healthy")
    assert await plan_of(store, ids[1]) == ("pager",)
    assert await store.owed_replans() == set()


async def test_a_replan_owed_while_a_settle_is_written_stays_owed(store: Store) -> None:
    """An owe arriving as a whole walk writes its settle (a reload just then) is stored after
    the settle, not deleted by it: its own walk is still to come."""
    await planned_by_routes(store)
    paced = Paced(store)
    rerouter = Rerouter(cast(Store, paced), lambda: RELOADED, Clock(), digest=lambda: "reloaded")
    owing: list[asyncio.Task[None]] = []

    async def reloaded_again() -> None:
        paced.before_settle = None
        owing.append(asyncio.create_task(rerouter.owe()))
        await asyncio.sleep(0.05)  # the owe runs as far as it can

    await rerouter.owe()
    paced.before_settle = reloaded_again
    await rerouter.replan("healthy")
    await owing[0]
    assert await store.owed_replans() == {"reloaded"}
    await rerouter.replan("healthy")
    assert await store.owed_replans() == set()


async def test_a_replan_whose_owe_was_refused_stores_it_before_it_moves_a_page(store: Store) -> None:
    """A reload whose owe the store refused (routing.replan_unstored): its walk stores the owe
    first, moving nothing while it cannot, so a start with the routes put back (the daemon stopped,
    the file reverted) finds the backlog planned by the reloaded ones and re-plans it."""
    nid = await planned_by_routes(store)
    assert not await Rerouter(store, lambda: ROUTES, Clock(), digest=lambda: "old").resume(started=True)
    paced = Paced(store)
    reloaded = Rerouter(cast(Store, paced), lambda: RELOADED, Clock(), digest=lambda: "reloaded")
    paced.refused_owes = 2
    with pytest.raises(StoreUnavailable):
        await reloaded.owe()
    with pytest.raises(StoreUnavailable):
        await reloaded.replan("healthy")
    assert await plan_of(store, nid) == ("email",)
    assert await reloaded.replan("healthy") == 1
    assert (await store.planned_routes(), await store.owed_replans()) == ("reloaded", set())
    put_back = Rerouter(store, lambda: ROUTES, Clock(), digest=lambda: "old")
    assert await put_back.resume(started=True)
    assert await put_back.replan("healthy") == 1
    assert await plan_of(store, nid) == ("email",)


async def test_a_reload_as_the_first_pass_compares_the_routes_records_its_own(store: Store) -> None:
    """SIGHUP while the first pass compares the routes with the backlog's (a store with none
    recorded yet: new, or migrated from schema 12): the reload's owe is stored after what the
    comparison writes, so the routes recorded are the reloaded ones, which the backlog is on."""
    paced, digest = Paced(store), ["old"]
    rerouter = Rerouter(cast(Store, paced), lambda: ROUTES, Clock(), digest=lambda: digest[0])
    owing: list[asyncio.Task[None]] = []

    async def reloaded() -> None:  # Daemon.reload: the routes swapped, the owe in the background
        paced.after_planned_read = None
        digest[0] = "reloaded"
        owing.append(asyncio.create_task(rerouter.owe()))
        await asyncio.wait(owing, timeout=0.5)  # stored at once, unless it waits for the comparison

    paced.after_planned_read = reloaded
    await rerouter.resume(started=True)
    await owing[0]
    assert (await store.planned_routes(), await store.owed_replans()) == ("reloaded", {"reloaded"})
