"""The SQLite outbox: durable accept, claims, outcomes, rerouting, provider state, faults."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.core.health import HealthSnapshot, Transition
from daemon.core.model import CheckResult, CheckStatus, Notification, Plan, ProviderState, Severity
from daemon.core.routing import Matcher, Route, plans_for
from daemon.store.base import NewNotification, Outcome, StoreUnavailable
from daemon.store.sqlite import SqliteStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROUTES = (
    Route(
        "critical", Matcher(severities=frozenset({Severity.CRITICAL})), ("email", "backup"), ("hook", "sms")
    ),
    Route("rest", Matcher(), ("email",), None),
)


def note(n: int, severity: Severity = Severity.CRITICAL, key: str | None = None) -> NewNotification:
    notification = Notification(
        f"id-{n:05d}", key or f"key-{n}", T0, severity, f"subject {n}", "body", labels={"n": str(n)}
    )
    return NewNotification(notification, plans_for(notification, ROUTES))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "outbox.db")
    await s.open()
    yield s
    await s.close()


async def test_accept_is_durable_across_reopen(tmp_path: Path) -> None:
    """What accept returned is there after the store is closed and opened again."""
    s = SqliteStore(tmp_path / "outbox.db")
    await s.open()
    accepted = await s.accept([note(1), note(2, Severity.INFO)], T0)
    await s.close()
    again = SqliteStore(tmp_path / "outbox.db")
    await again.open()
    view = await again.notification(accepted[0].id)
    await again.close()
    assert view is not None
    assert view.status == "pending"
    assert view.plan == ("email", "backup")
    assert view.notification.labels == {"n": "1"}


async def test_repeated_idempotency_key_returns_the_first(store: SqliteStore) -> None:
    """A second notification with the same key is not stored; the first id comes back."""
    first = await store.accept([note(1, key="same")], T0)
    second = await store.accept([note(2, key="same"), note(3)], T0)
    assert second[0].id == first[0].id
    assert second[0].duplicate
    assert not second[1].duplicate
    assert (await store.queue()).notifications == {"pending": 2}


async def test_concurrent_accepts_share_commits(store: SqliteStore) -> None:
    """Many concurrent accepts all commit, each gets its own answer."""
    results = await asyncio.gather(*(store.accept([note(i)], T0) for i in range(300)))
    assert sorted(r[0].id for r in results) == [f"id-{i:05d}" for i in range(300)]
    assert (await store.queue()).notifications == {"pending": 300}


async def test_claim_and_deliver(store: SqliteStore) -> None:
    """A claimed delivery is in flight until its outcome is recorded; delivered ends it."""
    await store.accept([note(1)], T0)
    claimed = await store.claim("email", 10, T0, T0 + timedelta(minutes=5))
    assert [c.notification.id for c in claimed] == ["id-00001"]
    assert await store.claim("email", 10, T0, T0 + timedelta(minutes=5)) == []
    await store.record([Outcome(claimed[0].delivery.id, "delivered", T0, T0, "250 ok")], T0)
    view = await store.notification("id-00001")
    assert view is not None
    assert view.status == "delivered"
    assert [a.outcome for a in view.attempts] == ["delivered"]


async def test_retry_waits_until_due(store: SqliteStore) -> None:
    """A retried delivery is not claimable before its retry time."""
    await store.accept([note(1)], T0)
    (claimed,) = await store.claim("email", 1, T0, T0 + timedelta(minutes=5))
    later = T0 + timedelta(seconds=30)
    await store.record([Outcome(claimed.delivery.id, "retry", T0, T0, "421", retry_at=later)], T0)
    assert await store.due() == {"email": later}
    assert await store.claim("email", 1, T0 + timedelta(seconds=29), T0 + timedelta(minutes=5)) == []
    (again,) = await store.claim("email", 1, later, later + timedelta(minutes=5))
    assert again.delivery.attempts == 2


async def test_permanent_failure_moves_to_next_step(store: SqliteStore) -> None:
    """A failed step hands over to the plan's next channel; the last one failing fails the notification."""
    await store.accept([note(1)], T0)
    lease = T0 + timedelta(minutes=5)
    (first,) = await store.claim("email", 1, T0, lease)
    await store.record([Outcome(first.delivery.id, "failed", T0, T0, "550 no such user")], T0)
    (second,) = await store.claim("backup", 1, T0, lease)
    assert second.delivery.step == 1
    await store.record([Outcome(second.delivery.id, "failed", T0, T0, "410 gone")], T0)
    view = await store.notification("id-00001")
    assert view is not None
    assert view.status == "failed"


async def test_outage_mode_reroutes_pending_and_holds_the_rest(store: SqliteStore) -> None:
    """Entering outage moves pending email to the outage plan; deferred ones are held."""
    await store.accept([note(1), note(2, Severity.INFO)], T0)
    await _enter(store, ProviderState.OUTAGE)
    candidates = await store.reroute_candidates("outage", 100)
    plans = {n.id: plans_for(n, ROUTES)["outage"] for n in candidates}
    assert await store.reroute("outage", plans, T0) == 2
    assert await store.claim("email", 10, T0, T0 + timedelta(minutes=5)) == []
    (hook,) = await store.claim("hook", 10, T0, T0 + timedelta(minutes=5))
    assert hook.notification.id == "id-00001"
    assert (await store.queue()).notifications == {"pending": 1, "held": 1}


async def test_claims_only_deliveries_planned_for_the_current_mode(store: SqliteStore) -> None:
    """Until rerouted, a delivery planned for healthy mode is not sent during an outage."""
    await store.accept([note(1)], T0)
    await _enter(store, ProviderState.OUTAGE)
    assert await store.claim("email", 10, T0, T0 + timedelta(minutes=5)) == []


async def test_accept_uses_the_mode_in_force(store: SqliteStore) -> None:
    """A notification accepted during an outage gets its outage plan at once."""
    await _enter(store, ProviderState.OUTAGE)
    await store.accept([note(1), note(2, Severity.INFO)], T0)
    assert [c.notification.id for c in await store.claim("hook", 10, T0, T0)] == ["id-00001"]
    assert (await store.queue()).notifications == {"pending": 1, "held": 1}


async def test_release_claims_after_crash(store: SqliteStore) -> None:
    """Claims left in flight by a dead process become pending again."""
    await store.accept([note(1)], T0)
    await store.claim("email", 1, T0, T0 + timedelta(minutes=5))
    assert await store.release_claims(T0) == 1
    assert len(await store.claim("email", 1, T0, T0 + timedelta(minutes=5))) == 1


async def test_provider_state_and_events_persist(store: SqliteStore) -> None:
    """The tracker snapshot, transitions and check results are stored and read back."""
    snapshot = HealthSnapshot(natural=ProviderState.OUTAGE, since=T0, failures=3)
    transition = Transition(T0, ProviderState.SUSPECT, ProviderState.OUTAGE, "3 consecutive failures")
    await store.save_provider(snapshot, transition, T0)
    await store.record_check(CheckResult("smtp", CheckStatus.DOWN, "refused", 0.01, T0))
    view = await store.provider()
    assert view.state == ProviderState.OUTAGE
    assert view.mode == "outage"
    assert view.snapshot == snapshot
    assert view.events == (transition,)
    assert view.checks[0].reason == "refused"


async def test_disk_full_fails_the_commit_and_accepts_nothing(tmp_path: Path) -> None:
    """When SQLite reports the disk full, accept raises StoreUnavailable and no row is half there."""
    s = SqliteStore(tmp_path / "outbox.db")
    await s.open()
    await s.accept([note(0)], T0)
    pages = _page_count(tmp_path / "outbox.db") + 2
    await _limit_pages(s, pages)
    with pytest.raises(StoreUnavailable, match="full"):
        await s.accept([_big(i) for i in range(1, 50)], T0)
    await _limit_pages(s, 1_000_000)
    assert (await s.queue()).notifications == {"pending": 1}
    await s.accept([note(99)], T0)
    await s.close()


def _big(n: int) -> NewNotification:
    item = note(n)
    notification = Notification(item.notification.id, f"big-{n}", T0, Severity.INFO, "s", "x" * 20_000)
    return NewNotification(notification, item.plans)


def _page_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        count: int = conn.execute("PRAGMA page_count").fetchone()[0]
    return count


async def _limit_pages(store: SqliteStore, pages: int) -> None:
    """PRAGMA max_page_count makes SQLite answer SQLITE_FULL exactly as a full disk does."""
    await store._writer.run(lambda conn: conn.execute(f"PRAGMA max_page_count={pages}"))


async def _enter(store: SqliteStore, state: ProviderState) -> None:
    await store.save_provider(HealthSnapshot(natural=state, since=T0), None, T0)


def test_plan_round_trip_for_defer() -> None:
    """A deferred plan has no steps."""
    assert Plan("rest", "outage", defer=True).steps == ()
