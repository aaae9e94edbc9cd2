"""Leadership and the stored provider state, on real PostgreSQL: a provider write that fails
leaves no decision behind in memory (it was kept, so the retried override or the next check round
found nothing to change: the state and routing moved with no transition stored, announced or
caught up); an announcement the store could not take at once is tried again; a node elected again
does not thread a new outage under one announced before another node led. Found by a review;
each test failed on the code before. A failed store write is a save_provider or accept that
raises StoreUnavailable once, as a connection lost mid-call does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from daemon.announce import Announcer
from daemon.clock import SystemClock
from daemon.core.health import Thresholds
from daemon.core.model import CheckResult, CheckStatus, ProviderState
from daemon.core.routing import Matcher, Route
from daemon.intake.accept import Acceptor
from daemon.leadership import Leadership
from daemon.monitor import ProviderMonitor
from daemon.store.base import StoreUnavailable
from daemon.store.postgres import PostgresStore
from daemon.store.values import ListFilter
from tests.integration.conftest import PgFactory

pytestmark = pytest.mark.usefixtures("postgres_server")
T = TypeVar("T")
ROUTES = (Route("all", Matcher(), ("email",), ("backup",)),)


class Node:
    def __init__(self, store: PostgresStore, lease_s: float = 1.0) -> None:
        clock = SystemClock()
        self.store = store
        self.monitor = ProviderMonitor(store, Thresholds(failure=1, success=1), clock)
        self.lead = Leadership(store, self.monitor, clock, lease_s=lease_s)
        self.announcer = Announcer(Acceptor(store, lambda: ROUTES, clock, lambda: None), "mail", store, clock)
        self.monitor.on_transition(self.announcer.transition)
        self.monitor.on_lead(self.announcer.elected)  # as daemon.wiring.build_announcer does


def res(check: str, status: CheckStatus) -> CheckResult:
    return CheckResult(check, status, status.value, 0.01, datetime.now(UTC))


async def take_over(node: Node, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while not node.lead.is_leader:
        assert time.monotonic() < end
        await asyncio.sleep(0.1)
        await node.lead.tick()


async def announcements(store: PostgresStore) -> list:
    page = await store.search(ListFilter(limit=200))
    return sorted(
        (v.notification for v in page if v.notification.source == "backchannel"), key=lambda n: n.created_at
    )


def failing_once(call: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """``call``, raising StoreUnavailable the first time: a connection lost mid-call."""
    calls = 0

    async def flaky(*args: Any, **kw: Any) -> T:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreUnavailable("connection lost")
        return await call(*args, **kw)

    return flaky


async def test_override_after_failed_write_is_never_recorded_nor_announced(pg_nodes: PgFactory) -> None:
    """The leader's DB write fails once (connection lost); the operator retries the override."""
    a = Node(await pg_nodes("a"))
    await a.lead.tick()
    assert a.lead.is_leader
    a.store.save_provider = failing_once(a.store.save_provider)  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await a.monitor.force(ProviderState.OUTAGE, "maintenance")  # API: 503, operator retries
    await a.monitor.force(ProviderState.OUTAGE, "maintenance")  # API: 200
    await a.announcer.drain()
    view = await a.store.provider(events=10, checks=0)
    assert view.snapshot.state == ProviderState.OUTAGE
    assert [e.to_state for e in view.events] == [ProviderState.OUTAGE], "the transition is not recorded"
    assert len(await announcements(a.store)) == 1, "the outage is not announced"


async def test_check_round_after_failed_write_loses_transition(pg_nodes: PgFactory) -> None:
    a = Node(await pg_nodes("a"))
    await a.lead.tick()
    a.store.save_provider = failing_once(a.store.save_provider)  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await a.monitor.check_result(res("smtp", CheckStatus.DOWN))
    assert a.monitor.state == ProviderState.HEALTHY  # the decision not stored is not kept
    await a.monitor.check_result(res("smtp", CheckStatus.DOWN))
    await a.announcer.drain()
    view = await a.store.provider(events=10, checks=0)
    assert view.snapshot.state == ProviderState.OUTAGE
    assert [e.to_state for e in view.events] == [ProviderState.OUTAGE]
    assert len(await announcements(a.store)) == 1


async def test_re_elected_leader_threads_new_outage_under_old_one(pg_nodes: PgFactory) -> None:
    a, b = Node(await pg_nodes("a")), Node(await pg_nodes("b"))
    await a.lead.tick()
    await b.lead.tick()
    assert a.lead.is_leader and not b.lead.is_leader
    await a.monitor.force(ProviderState.OUTAGE, "first outage")
    await a.announcer.drain()
    # a stalls past its lease (no ticks); b takes over and ends the outage
    await take_over(b)
    await b.monitor.release()
    await b.announcer.drain()
    # b stops cleanly (resigns); a leads again and a second, unrelated outage begins
    await b.lead.stop()
    await take_over(a)
    await a.monitor.force(ProviderState.OUTAGE, "second outage")
    await a.announcer.drain()
    sent = await announcements(a.store)
    second = sent[-1]
    assert second.labels["state"] == "outage"
    assert "follows" not in second.labels, "a new outage is threaded under the previous, finished one"


async def test_announcement_lost_when_db_blips_after_the_transition_commits(pg_nodes: PgFactory) -> None:
    """The transition commits; the announcement's own accept (a second transaction) fails once."""
    a, b = Node(await pg_nodes("a")), Node(await pg_nodes("b"))
    await a.lead.tick()
    await b.lead.tick()
    acceptor = a.announcer._acceptor
    acceptor.accept = failing_once(acceptor.accept)  # type: ignore[method-assign]
    await a.monitor.check_result(res("smtp", CheckStatus.DOWN))
    await a.announcer.drain()
    # a dies; b takes over and resumes the stored outage
    await take_over(b)
    await b.monitor.check_result(res("smtp", CheckStatus.DOWN))
    await b.announcer.drain()
    view = await b.store.provider(events=10, checks=0)
    assert [e.to_state for e in view.events] == [ProviderState.OUTAGE]
    assert len(await announcements(b.store)) == 1, "the stored outage was never announced"


async def test_recovery_announcement_is_tried_again_when_the_store_blips(pg_nodes: PgFactory) -> None:
    """The recovery's accept fails once: it is tried again, as the outage's own announcement is."""
    a = Node(await pg_nodes("a"))
    await a.lead.tick()
    await a.monitor.force(ProviderState.OUTAGE, "test")
    await a.announcer.drain()
    acceptor = a.announcer._acceptor
    acceptor.accept = failing_once(acceptor.accept)  # type: ignore[method-assign]
    await a.monitor.release()
    await a.announcer.drain()
    assert [n.labels["state"] for n in await announcements(a.store)] == ["outage", "healthy"]
