"""The recovery's announcement finds the outage's opening after a restart, by its key (SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.announce import Announcer
from daemon.clock import SystemClock
from daemon.core.health import HealthSnapshot, Transition
from daemon.core.model import FOLLOWS_LABEL, ProviderState
from daemon.core.routing import Matcher, Route
from daemon.intake.accept import Acceptor
from daemon.store.sqlite import SqliteStore
from daemon.store.values import ListFilter

ROUTES = (Route("all", Matcher(), ("email",), ("hook",)),)


async def test_a_recovery_after_a_restart_finds_the_opening_by_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that did not announce the outage (a restart, another node) threads the recovery
    under it with one lookup by key, not a search through every notification since it began."""
    store, clock = SqliteStore(tmp_path / "outbox.db"), SystemClock()
    await store.open()
    try:
        acceptor = Acceptor(store, lambda: ROUTES, clock, lambda: None)
        down = Transition(clock.now(), ProviderState.HEALTHY, ProviderState.OUTAGE, "test")
        await store.save_provider(HealthSnapshot(natural=ProviderState.OUTAGE), down, down.at)
        first = Announcer(acceptor, "p", store, clock)
        first.transition(down)
        await first.drain()
        back = Transition(clock.now(), ProviderState.OUTAGE, ProviderState.HEALTHY, "test")
        await store.save_provider(HealthSnapshot(), back, back.at)
        views = await store.search(ListFilter(limit=10))

        async def no_search(*_: object) -> None:
            raise AssertionError("searched every notification since the outage began")

        monkeypatch.setattr(store, "search", no_search)
        again = Announcer(acceptor, "p", store, clock)  # the opening is not remembered here
        again.transition(back)
        await again.drain()
        monkeypatch.undo()
        (opening,) = [v.notification for v in views]
        recovery = [
            v.notification
            for v in await store.search(ListFilter(limit=10))
            if v.notification.id != opening.id
        ]
        assert [n.labels.get(FOLLOWS_LABEL) for n in recovery] == [opening.idempotency_key]
    finally:
        await store.close()
