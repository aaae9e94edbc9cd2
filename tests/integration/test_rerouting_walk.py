"""A walk over a long backlog of unsent notifications (the start's rescue, the sweep at a change of
mode) is work the watchdog hears of page by page, and a stop does not wait for its end; the sweep
pages by id, so each page costs what a page costs however long the backlog (found by a review: a
300,000-notification backlog kept the first pass going for minutes, and systemd's watchdog killed
the daemon again and again)."""

from __future__ import annotations

from daemon.clock import SystemClock
from daemon.core.model import ProviderState
from daemon.core.routing import Matcher, Route
from daemon.rerouting import BATCH, Rerouter
from daemon.store.base import Store
from tests.integration.test_store import T0, _enter, note

#: the plan the notifications were accepted with names "hook" for an outage; this one names "pager"
MOVED = (Route("all", Matcher(), ("email",), ("pager",)),)
COUNT = 2 * BATCH + 100


async def test_the_sweep_reports_each_page_and_moves_every_notification(store: Store) -> None:
    await store.accept([note(i) for i in range(COUNT)], T0)  # planned while healthy
    await _enter(store, ProviderState.OUTAGE)
    rerouter = Rerouter(store, lambda: MOVED, SystemClock())
    pages: list[int] = []
    rerouter.progress = lambda: pages.append(1)
    assert await rerouter.sweep("outage") == COUNT
    assert len(pages) == 3  # 500, 500, 100
    assert await store.reroute_candidates("outage", 10) == []


async def test_a_stop_ends_the_walk_after_the_page_in_hand(store: Store) -> None:
    await store.accept([note(i) for i in range(COUNT)], T0)
    await _enter(store, ProviderState.OUTAGE)
    rerouter = Rerouter(store, lambda: MOVED, SystemClock())
    pages: list[int] = []
    rerouter.progress = lambda: pages.append(1)
    rerouter.stopping = lambda: bool(pages)
    assert await rerouter.sweep("outage") == BATCH
    assert len(pages) == 1
    left = await store.reroute_candidates("outage", COUNT)
    assert len(left) == COUNT - BATCH
    assert [n.id for n in left[:1]] == [f"id-{BATCH:05d}"]
