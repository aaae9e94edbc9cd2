"""The retention loop (daemon/retention.py) against a scripted store: batches, errors, who runs it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from daemon.config_store import SqliteStoreConfig
from daemon.core.health import HealthSnapshot
from daemon.core.model import Mode, ProviderState
from daemon.retention import Pruner
from daemon.store.base import StoreUnavailable
from daemon.store.values import ProviderView
from tests.support import VirtualClock, until

NOW = datetime(2026, 11, 30, 5, tzinfo=UTC)


class Scripted:
    """``prune`` answers from a script; an exception in it is raised."""

    def __init__(self, *answers: int | Exception, mode: Mode = "healthy") -> None:
        self.answers = list(answers)
        self.calls: list[tuple[datetime, int]] = []
        self.mode = mode

    async def provider(self, events: int = 20, checks: int = 20) -> ProviderView:
        """The provider in ``mode`` since before any transition kept: no outage start in sight."""
        state = ProviderState.HEALTHY if self.mode == "healthy" else ProviderState.OUTAGE
        return ProviderView(state, self.mode, HealthSnapshot(natural=state))

    async def prune(self, before: datetime, limit: int) -> int:
        self.calls.append((before, limit))
        answer = self.answers.pop(0) if self.answers else 0
        if isinstance(answer, Exception):
            raise answer
        return answer


def _pruner(
    store: Scripted,
    *,
    leads: bool = True,
    retention: timedelta | None = timedelta(days=30),
    on_pruned: Callable[[int], None] = lambda n: None,
    on_failed: Callable[[], None] = lambda: None,
) -> Pruner:
    return Pruner(
        store,  # type: ignore[arg-type]
        retention,
        VirtualClock(NOW),
        lambda: leads,
        every_s=0.01,
        first_after_s=0.0,
        batch=2,
        on_pruned=on_pruned,
        on_failed=on_failed,
    )


async def test_batches_until_one_comes_back_short_and_each_is_counted() -> None:
    store, counted = Scripted(2, 2, 1, 2), list[int]()
    pruner = _pruner(store, on_pruned=counted.append)
    assert await pruner.run_once() == 5
    assert store.calls == [(NOW - timedelta(days=30), 2)] * 3
    assert counted == [2, 2, 1]


async def test_a_store_error_ends_the_run_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    store, failures = Scripted(2, StoreUnavailable("disk gone")), list[int]()
    pruner = _pruner(store, on_failed=lambda: failures.append(1))
    with caplog.at_level(logging.WARNING, logger="daemon.retention"):
        assert await pruner.run_once() == 2
    assert [r.__dict__.get("event") for r in caplog.records] == ["store.prune_failed"]
    assert failures == [1]


async def test_only_the_leader_prunes_and_a_stop_ends_the_loop() -> None:
    follower, leader = Scripted(), Scripted()
    pruners = [_pruner(follower, leads=False), _pruner(leader)]
    tasks = [asyncio.create_task(p.run()) for p in pruners]
    await until(lambda: len(leader.calls) >= 2, 5)
    for p in pruners:
        p.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert follower.calls == []


async def test_kept_for_ever_when_the_retention_is_null() -> None:
    store = Scripted()
    await asyncio.wait_for(_pruner(store, retention=None).run(), 5)
    assert store.calls == []


async def test_nothing_is_deleted_during_an_outage_whose_start_is_out_of_sight() -> None:
    """Its catch-up will read from a day before that start: where the cut would be is unknown."""
    store = Scripted(2, mode="outage")
    assert await _pruner(store).run_once() == 0
    assert store.calls == []


def test_the_retention_is_a_month_by_default_and_at_least_a_week() -> None:
    assert SqliteStoreConfig(path="x.db").retention == timedelta(days=30)
    assert SqliteStoreConfig(path="x.db", retention=None).retention is None
    with pytest.raises(ValueError, match="at least 7d"):
        SqliteStoreConfig(path="x.db", retention="2d")
