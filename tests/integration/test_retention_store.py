"""Retention on both stores (SQLite, the real PostgreSQL): what ``prune`` deletes and what it keeps."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from daemon.core.health import HealthSnapshot, Transition
from daemon.core.model import Escalation, EscalationStep, Mode, Notification, Plan, ProviderState, Severity
from daemon.retention import Pruner
from daemon.store.base import Store
from daemon.store.queries import load
from daemon.store.sqlite import SqliteStore
from daemon.store.values import NewNotification, Outcome
from tests.integration.test_store import T0, note, run_sql
from tests.support import VirtualClock

LEASE = timedelta(minutes=5)
#: a month and a day after T0: what finished at T0 is past a 30-day retention
BEFORE = T0 + timedelta(days=31)


async def _deliver(store: Store, channel: str) -> list[str]:
    """Claim what is due on ``channel`` an hour after T0 and record it delivered; their ids."""
    at = T0 + timedelta(hours=1)
    claimed = await store.claim(channel, 10, at, at + LEASE)
    await store.record([Outcome(c.delivery.id, "delivered", at, at, "ok") for c in claimed], at)
    return [c.notification.id for c in claimed]


def _escalating(n: int) -> NewNotification:
    """Email at once, SMS five minutes later unless acknowledged: delivered, and still owing a step."""
    steps = (EscalationStep(timedelta(0), ("email",)), EscalationStep(timedelta(minutes=5), ("sms",)))
    plans: dict[Mode, Plan] = {
        mode: Plan(route="esc", mode=mode, escalation=Escalation(steps)) for mode in ("healthy", "outage")
    }
    notification = Notification(f"id-{n:05d}", f"key-{n}", T0, Severity.CRITICAL, f"subject {n}")
    return NewNotification(notification, plans, pinned=True)


def _count(store: Store, table: str, notification_id: str) -> int:
    column = "id" if table == "notifications" else "notification_id"
    query = f"SELECT count(*) FROM {table} WHERE {column} = '{notification_id}'"  # noqa: S608
    (row,) = run_sql(store, query)
    return int(row[0])  # type: ignore[call-overload]


async def test_finished_notifications_past_the_retention_go_with_their_rows(store: Store) -> None:
    await store.accept([note(1), note(2), note(3), _escalating(4)], T0)
    assert await store.cancel("id-00002", T0) == "cancelled"
    assert sorted(await _deliver(store, "email")) == ["id-00001", "id-00003", "id-00004"]
    run_sql(store, "INSERT INTO group_versions (lineage, notification_id) VALUES ('g', 'id-00001')")
    await store.accept([note(5)], T0 + timedelta(days=30, hours=12))  # pending, and recent

    assert await store.prune(BEFORE, 100) == 3
    for gone in ("id-00001", "id-00002", "id-00003"):
        assert await store.notification(gone) is None
        for table in ("notifications", "deliveries", "attempts", "group_versions"):
            assert _count(store, table, gone) == 0, (gone, table)
    # an escalation step still to send, and a notification not yet sent: kept however old
    for kept in ("id-00004", "id-00005"):
        view = await store.notification(kept)
        assert view is not None and _count(store, "deliveries", kept) >= 1
    assert await store.prune(BEFORE, 100) == 0


async def test_a_notification_changed_within_the_retention_is_kept(store: Store) -> None:
    """Created long before the cut, delivered after it: its last change counts, not its birth."""
    await store.accept([note(1)], T0)
    later = BEFORE + timedelta(days=1)
    claimed = await store.claim("email", 10, later, later + LEASE)
    await store.record([Outcome(c.delivery.id, "delivered", later, later, "ok") for c in claimed], later)
    assert await store.prune(BEFORE, 100) == 0
    assert await store.prune(later + timedelta(seconds=1), 100) == 1


async def test_pruning_goes_in_batches_oldest_first(store: Store) -> None:
    for n in range(1, 4):
        await store.accept([note(n)], T0 + timedelta(minutes=n))
    await _deliver(store, "email")
    assert await store.prune(BEFORE, 2) == 2
    assert await store.notification("id-00001") is None and await store.notification("id-00002") is None
    assert await store.notification("id-00003") is not None
    assert await store.prune(BEFORE, 2) == 1


#: each foreign key whose child column leads no index, as (table, column): one on PostgreSQL
_UNINDEXED_PG = """
SELECT c.conrelid::regclass::text, a.attname FROM pg_constraint c
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace
  AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid AND i.indkey[0] = c.conkey[1])
"""


def _unindexed_sqlite(store: Store) -> list[tuple[str, str]]:
    found = []
    for (table,) in run_sql(store, "SELECT name FROM sqlite_master WHERE type = 'table'"):
        leading = {
            str(run_sql(store, f"PRAGMA index_info('{index[1]}')")[0][2])
            for index in run_sql(store, f"PRAGMA index_list('{table}')")
        }
        for key in run_sql(store, f"PRAGMA foreign_key_list('{table}')"):
            if key[3] not in leading:
                found.append((str(table), str(key[3])))
    return found


async def test_every_foreign_key_deleted_through_is_indexed(store: Store) -> None:
    """A pruned delivery's attempts are found by an index, not a read of them all per delivery."""
    if isinstance(store, SqliteStore):
        assert _unindexed_sqlite(store) == []
    else:
        assert run_sql(store, _UNINDEXED_PG) == []


async def test_sqlite_finds_what_to_prune_by_creation_time(tmp_path: Path) -> None:
    """Oldest first by the created_at index: not every finished notification read and sorted."""
    store = SqliteStore(tmp_path / "outbox.db")
    await store.open()
    try:
        prunable = load("sqlite")["prunable"].replace(":before", "0").replace(":limit", "1")
        query = f"EXPLAIN QUERY PLAN {prunable}"
        plan = " | ".join(str(row[3]) for row in run_sql(store, query))
    finally:
        await store.close()
    assert "USING INDEX notifications_created" in plan and "TEMP B-TREE" not in plan, plan


async def _turn(store: Store, at: datetime, before: ProviderState, after: ProviderState) -> None:
    transition = Transition(at, before, after, "test")
    await store.save_provider(HealthSnapshot(natural=after, since=at), transition, at)


async def test_what_an_outage_sent_is_kept_until_its_catch_up(store: Store) -> None:
    """A week-long outage's sends outlive a 7-day retention until a day after the recovery."""
    await _turn(store, T0 - timedelta(hours=1), ProviderState.HEALTHY, ProviderState.OUTAGE)
    await store.accept([note(1)], T0)
    assert await _deliver(store, "hook") == ["id-00001"]  # the backup, an hour into the outage
    retention, recovered = timedelta(days=7), T0 + timedelta(days=10)

    def pruner(at: datetime) -> Pruner:
        return Pruner(store, retention, VirtualClock(at), lambda: True)

    assert await pruner(recovered - timedelta(hours=1)).run_once() == 0
    await _turn(store, recovered, ProviderState.OUTAGE, ProviderState.HEALTHY)
    assert await pruner(recovered + timedelta(hours=23)).run_once() == 0
    assert await store.notification("id-00001") is not None
    assert await pruner(recovered + timedelta(days=1, hours=1)).run_once() == 1
