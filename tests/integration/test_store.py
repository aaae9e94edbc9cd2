"""The outbox on both backends (SQLite, PostgreSQL): durable accept, claims, outcomes, rerouting,
provider state, faults; then what only several PostgreSQL nodes sharing one database can show."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from daemon.core.health import HealthSnapshot, Transition
from daemon.core.model import CheckResult, CheckStatus, Notification, Plan, ProviderState, Severity
from daemon.core.routing import Matcher, Route, plans_for
from daemon.store import migrations, postgres_accept_tx
from daemon.store.base import KeyReused, Store, StoreUnavailable, Unreadable
from daemon.store.migrations import SchemaTooNew
from daemon.store.postgres import PostgresStore
from daemon.store.postgres_pool import connect_args
from daemon.store.sqlite import SqliteStore
from daemon.store.values import Accepted, Callback, ListFilter, NewNotification, Outcome, OutcomeKind
from tests.integration.conftest import PgFactory, StoreFactory, admin
from tests.stand_ins.tcp_proxy import in_front_of_postgres
from tests.support import until

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


async def test_accept_is_durable_across_reopen(make_store: StoreFactory) -> None:
    """What accept returned is there after the store is closed and opened again."""
    s = make_store()
    await s.open()
    accepted = await s.accept([note(1), note(2, Severity.INFO)], T0)
    await s.close()
    again = make_store()
    await again.open()
    view = await again.notification(accepted[0].id)
    await again.close()
    assert view is not None
    assert view.status == "pending"
    assert view.plan == ("email", "backup")
    assert view.notification.labels == {"n": "1"}


async def test_repeated_idempotency_key_returns_the_first(store: Store) -> None:
    """A second notification with the same key is not stored; the first id comes back."""
    first = await store.accept([note(1, key="same")], T0)
    second = await store.accept([note(2, key="same"), note(3)], T0)
    assert second[0].id == first[0].id
    assert second[0].duplicate
    assert not second[1].duplicate
    assert (await store.queue()).notifications == {"pending": 2}


def keyed(n: int, key: str, digest: str | None) -> NewNotification:
    """A notification under a key its client chose, with the digest of the request it came in."""
    return replace(note(n, key=key), digest=None if digest is None else f"v1:{digest}")


async def test_a_key_back_with_another_request_is_refused_and_nothing_of_its_accept_is_stored(
    store: Store,
) -> None:
    """The IETF Idempotency-Key rule: the same key and request is a duplicate; the same key with
    another request is refused (KeyReused, naming the item and the first notification), and the
    accept's other notifications are not stored either; a key first stored without a digest
    (made before digests, or by an intake) cannot tell, so it stays a duplicate."""
    (first,) = await store.accept([keyed(1, "deploy-1", "aaa")], T0)
    (same,) = await store.accept([keyed(2, "deploy-1", "aaa")], T0)
    assert same == Accepted(first.id, duplicate=True)
    with pytest.raises(KeyReused) as refused:
        await store.accept([keyed(3, "fresh", "ccc"), keyed(4, "deploy-1", "bbb")], T0)
    assert (refused.value.key, refused.value.first_id, refused.value.index) == ("deploy-1", first.id, 1)
    assert await store.notification("id-00003") is None
    (unknown,) = await store.accept([note(5, key="legacy")], T0)
    assert (await store.accept([keyed(6, "legacy", "ddd")], T0)) == [Accepted(unknown.id, duplicate=True)]
    assert (await store.queue()).notifications == {"pending": 2}


async def test_a_key_that_is_the_id_of_a_notification_sent_without_one_is_refused(store: Store) -> None:
    """A notification accepted without a key is stored under its own id as key; a client that
    chooses that id as the key of another request is refused, not answered with the first as a
    duplicate (its notification silently never stored). The same call twice is one notification."""
    (keyless,) = await store.accept([note(1, key="id-00001")], T0)
    with pytest.raises(KeyReused) as refused:
        await store.accept([keyed(2, "id-00001", "bbb")], T0)
    assert (refused.value.key, refused.value.first_id) == ("id-00001", keyless.id)
    (first,) = await store.accept([keyed(3, "id-00003", "ccc")], T0)  # a key that is its own id
    assert await store.accept([keyed(3, "id-00003", "ccc")], T0) == [Accepted(first.id, duplicate=True)]
    assert (await store.queue()).notifications == {"pending": 2}


async def test_a_key_reused_within_one_accept_is_refused_with_its_place(store: Store) -> None:
    """Two items of one accept with one key: the same request is a duplicate of the first item,
    another request refuses the accept."""
    same = await store.accept([keyed(1, "k", "aaa"), keyed(2, "k", "aaa")], T0)
    assert same == [Accepted("id-00001", duplicate=False), Accepted("id-00001", duplicate=True)]
    with pytest.raises(KeyReused) as refused:
        await store.accept([keyed(3, "j", "aaa"), keyed(4, "j", "bbb")], T0)
    assert (refused.value.first_id, refused.value.index) == ("id-00003", 1)
    assert await store.notification("id-00003") is None


async def test_a_refused_key_leaves_the_accepts_committed_beside_it(store: Store) -> None:
    """Accepts sharing a transaction with a refused one commit and are answered as usual."""
    await store.accept([keyed(0, "taken", "aaa")], T0)
    results = await asyncio.gather(
        *(store.accept([note(i)], T0) for i in range(1, 40)),
        store.accept([keyed(99, "taken", "bbb")], T0),
        return_exceptions=True,
    )
    assert isinstance(results[-1], KeyReused)
    assert [r[0].id for r in results[:-1] if isinstance(r, list)] == [f"id-{i:05d}" for i in range(1, 40)]
    assert (await store.queue()).notifications == {"pending": 40}


async def test_concurrent_accepts_share_commits(store: Store) -> None:
    """Many concurrent accepts all commit, each gets its own answer."""
    results = await asyncio.gather(*(store.accept([note(i)], T0) for i in range(300)))
    assert sorted(r[0].id for r in results) == [f"id-{i:05d}" for i in range(300)]
    assert (await store.queue()).notifications == {"pending": 300}


async def test_concurrent_accepts_with_one_that_cannot_be_stored_fail_it_alone(store: Store) -> None:
    """A notification whose labels cannot be written (no caller of the store makes one: the API
    validates them) fails its own accept, at once; the accepts beside it commit."""
    bad = note(99)
    bad = replace(bad, notification=replace(bad.notification, labels={"n": {1, 2}}))  # type: ignore[dict-item]
    *results, failed = await asyncio.wait_for(
        asyncio.gather(
            *(store.accept([note(i)], T0) for i in range(10)), store.accept([bad], T0), return_exceptions=True
        ),
        10,
    )
    assert isinstance(failed, Exception)
    assert [r[0].id for r in results] == [f"id-{i:05d}" for i in range(10)]  # type: ignore[index]
    assert (await store.queue()).notifications == {"pending": 10}


async def test_claim_and_deliver(store: Store) -> None:
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


def run_sql(store: Store, statement: str) -> list[tuple[object, ...]]:
    """A statement run on the store's database from outside it, as an operator's tool would."""
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            return conn.execute(statement).fetchall()
    assert isinstance(store, PostgresStore)
    with admin(store._url) as pg:
        cur = pg.execute(statement)
        return cur.fetchall() if cur.description else []


async def test_a_claimed_row_that_cannot_be_read_is_put_back_and_the_others_go_out(store: Store) -> None:
    """A notification row the codec cannot read (a severity another release wrote) is neither sent
    nor failed: its claimed delivery is pending again, due in a minute, the reason in its
    last_error and the claim not counted as an attempt (a node that can read it may send it, with
    its whole retry budget); the deliveries claimed with it go out."""
    await store.accept([note(1), note(2), note(3)], T0)
    run_sql(store, "UPDATE notifications SET severity = 'page' WHERE id = 'id-00002'")
    lease = T0 + timedelta(minutes=5)
    assert [c.notification.id for c in await store.claim("email", 10, T0, lease)] == ["id-00001", "id-00003"]
    sql = "SELECT d.state, d.attempts, d.last_error, n.status FROM deliveries d JOIN notifications n"
    trail = run_sql(store, sql + " ON n.id = d.notification_id WHERE d.notification_id = 'id-00002'")
    assert [(state, attempts, status) for state, attempts, _, status in trail] == [("pending", 0, "pending")]
    assert "cannot be read from the outbox" in str(trail[0][2]) and "'page'" in str(trail[0][2])
    assert run_sql(store, "SELECT count(*) FROM attempts WHERE notification_id = 'id-00002'") == [(0,)]
    assert await store.claim("email", 10, T0 + timedelta(seconds=59), lease) == []
    for minutes in range(1, 13):  # met again each minute, put back each time
        assert await store.claim("email", 10, T0 + timedelta(minutes=minutes, seconds=1), lease) == []
    run_sql(store, "UPDATE notifications SET severity = 'critical' WHERE id = 'id-00002'")  # mended
    again = await store.claim("email", 10, T0 + timedelta(minutes=15), lease + timedelta(minutes=15))
    assert [(c.notification.id, c.delivery.attempts) for c in again] == [("id-00002", 1)]  # no budget spent


async def test_the_lists_read_past_a_row_that_cannot_be_read(store: Store) -> None:
    """A list's page leaves an unreadable row out and is still full, so paging goes on to the end."""
    await store.accept([note(i) for i in range(1, 6)], T0)
    run_sql(store, "UPDATE notifications SET severity = 'page' WHERE id = 'id-00004'")
    first = await store.search(ListFilter(limit=2))
    assert [v.notification.id for v in first] == ["id-00005", "id-00003"]
    rest = await store.search(ListFilter(before="id-00003", limit=2))
    assert [v.notification.id for v in rest] == ["id-00002", "id-00001"]
    assert [v.notification.id for v in await store.recent(3)] == ["id-00005", "id-00003", "id-00002"]


async def test_reading_an_unreadable_notification_says_why(store: Store) -> None:
    """Reading the one notification whose row cannot be decoded raises Unreadable naming it and
    the value, instead of whatever the codec raised."""
    await store.accept([note(1)], T0)
    run_sql(store, "UPDATE notifications SET severity = 'page' WHERE id = 'id-00001'")
    with pytest.raises(Unreadable, match=r"id-00001: its row cannot be read .*'page'") as raised:
        await store.notification("id-00001")
    assert raised.value.notification_id == "id-00001"
    assert await store.notification("id-00002") is None


async def test_a_replan_reads_past_a_row_that_cannot_be_read(store: Store) -> None:
    """The re-plans' reads (a mode change's sweep, a reload's replan) leave an unreadable
    notification as it is, instead of raising at the moment an outage is declared, and still
    fill their pages with the others."""
    await store.accept([note(1), note(2), note(3)], T0)
    run_sql(store, "UPDATE notifications SET severity = 'page' WHERE id IN ('id-00001', 'id-00002')")
    assert [n.id for n in await store.reroute_candidates("outage", 1)] == ["id-00003"]
    assert [n.id for n, _ in await store.unsent("", 1)] == ["id-00003"]
    assert run_sql(store, "SELECT status FROM notifications WHERE id = 'id-00002'") == [("pending",)]
    assert await store.cancel("id-00002", T0) == "cancelled"  # what an operator can do about it


async def test_a_repin_leaves_an_unreadable_pinned_row_and_moves_the_others(store: Store) -> None:
    """A mode change re-pins what backchannel planned itself (drills, announcements); one whose
    pinned plans cannot be read stays as it is instead of raising out of the sweep."""
    pinned = [replace(note(n), pinned=True) for n in (1, 2, 3)]
    await store.accept(pinned, T0)
    run_sql(store, "UPDATE notifications SET pinned = '{\"outage\": 1}' WHERE id = 'id-00002'")
    run_sql(store, "UPDATE provider SET mode = 'outage'")
    assert await store.repin("outage", T0, 500) == 2
    assert await store.repin("outage", T0, 500) == 0
    modes = run_sql(store, "SELECT id, mode FROM notifications ORDER BY id")
    assert modes == [("id-00001", "outage"), ("id-00002", "healthy"), ("id-00003", "outage")]


async def test_retry_waits_until_due(store: Store) -> None:
    """A retried delivery is not claimable before its retry time."""
    await store.accept([note(1)], T0)
    (claimed,) = await store.claim("email", 1, T0, T0 + timedelta(minutes=5))
    later = T0 + timedelta(seconds=30)
    await store.record([Outcome(claimed.delivery.id, "retry", T0, T0, "421", retry_at=later)], T0)
    assert await store.due() == {"email": later}
    assert await store.claim("email", 1, T0 + timedelta(seconds=29), T0 + timedelta(minutes=5)) == []
    (again,) = await store.claim("email", 1, later, later + timedelta(minutes=5))
    assert again.delivery.attempts == 2


async def test_what_a_failed_attempt_did_post_is_kept_for_threads_and_edits(store: Store) -> None:
    """A send that reached some targets before it failed keeps their ids, retried or failed for
    good, for an acknowledgement to edit; a later attempt adds its own ids to them."""
    await store.accept([note(1), note(2)], T0)
    lease, later = T0 + timedelta(minutes=5), T0 + timedelta(seconds=30)
    first, second = await store.claim("email", 2, T0, lease)
    assert await store.thread_of("key-1", "email") is None
    partly = "C0OPS:1.000001"
    await store.record(
        [
            Outcome(first.delivery.id, "retry", T0, T0, "C0DEV: 429", retry_at=later, remote_id=partly),
            Outcome(second.delivery.id, "failed", T0, T0, "C0DEV: gone", remote_id="C0OPS:1.000002"),
        ],
        T0,
    )
    # follow-ups thread into delivered messages only (a resolution must not skip #dev's retry)
    assert await store.thread_of("key-1", "email") is None
    assert await store.thread_of("key-1", "email", any_state=True) == partly
    assert await store.thread_of("key-2", "email", any_state=True) == "C0OPS:1.000002"
    (again,) = await store.claim("email", 1, later, later + timedelta(minutes=5))
    retry = Outcome(again.delivery.id, "retry", later, later, "C0DEV: 500", retry_at=later)
    await store.record([retry], later)  # posted nothing more: what it had is kept
    assert await store.thread_of("key-1", "email", any_state=True) == partly
    (last,) = await store.claim("email", 1, later, later + timedelta(minutes=5))
    # after a restart the channel no longer knows #ops got it: posted there again, both are kept
    whole = "C0OPS:1.000004,C0DEV:1.000003"
    await store.record([Outcome(last.delivery.id, "delivered", later, later, "ok", remote_id=whole)], later)
    assert await store.thread_of("key-1", "email") == f"{partly},{whole}"


async def test_permanent_failure_moves_to_next_step(store: Store) -> None:
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


async def test_an_outcome_recorded_twice_is_applied_once(store: Store) -> None:
    """A record retried (its first commit's sync failed, say) adds a trail line, nothing more."""
    await store.accept([note(1)], T0)
    lease = T0 + timedelta(minutes=5)
    (first,) = await store.claim("email", 1, T0, lease)
    failed = [Outcome(first.delivery.id, "failed", T0, T0, "550 no such user")]
    await store.record(failed, T0)
    await store.record(failed, T0)
    view = await store.notification("id-00001")
    assert view is not None
    assert [(d.channel, d.step) for d in view.deliveries] == [("email", 0), ("backup", 1)]  # one next step
    assert [a.outcome for a in view.attempts] == ["failed", "failed"]  # both in the trail


async def test_outage_mode_reroutes_pending_and_holds_the_rest(store: Store) -> None:
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


async def test_claims_only_deliveries_planned_for_the_current_mode(store: Store) -> None:
    """Until rerouted, a delivery planned for healthy mode is not sent during an outage."""
    await store.accept([note(1)], T0)
    await _enter(store, ProviderState.OUTAGE)
    assert await store.claim("email", 10, T0, T0 + timedelta(minutes=5)) == []


async def test_due_names_only_channels_with_work_of_the_mode_in_force(store: Store) -> None:
    """Pending deliveries of the other mode make no channel due; the mode's own do, at their time."""
    await store.accept([note(1), note(2)], T0)
    assert await store.due() == {"email": T0}
    await _enter(store, ProviderState.OUTAGE)
    assert await store.due() == {}
    await store.accept([note(3)], T0 + timedelta(seconds=1))
    assert await store.due() == {"hook": T0 + timedelta(seconds=1)}


async def test_concurrent_outcomes_all_commit_and_a_bad_one_fails_alone(store: Store) -> None:
    """Outcomes recorded at once all land; one naming no delivery fails, and only its caller."""
    await store.accept([note(i) for i in range(20)], T0)
    claimed = await store.claim("email", 20, T0, T0 + timedelta(minutes=5))
    good = [store.record([Outcome(c.delivery.id, "delivered", T0, T0, "250 ok")], T0) for c in claimed]
    bad = store.record([Outcome(10**9, "delivered", T0, T0, "250 ok")], T0)
    *results, failed = await asyncio.gather(*good, bad, return_exceptions=True)
    assert results == [None] * 20
    assert isinstance(failed, Exception)
    assert (await store.queue()).notifications == {"delivered": 20}


async def test_durable_writes_are_answered_after_the_wal_sync_and_leases_before_it(tmp_path: Path) -> None:
    """Every commit is NORMAL; a durable job waits for the WAL's fdatasync, a lease does not."""
    from daemon.store.walsync import WalSync
    from daemon.store.writer import GroupCommitWriter

    wal = WalSync(tmp_path / "outbox.db")
    entered, gate = threading.Event(), threading.Event()

    def slow_sync() -> None:
        entered.set()
        gate.wait(30)
        wal.sync()

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT, value TEXT)")
        return conn

    writer = GroupCommitWriter(connect, sync=slow_sync)
    writer.start()
    seen: list[int] = []
    try:

        def write(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO kv (key, value) VALUES ('k', 'v')")
            return int(conn.execute("PRAGMA synchronous").fetchone()[0])

        durable = asyncio.ensure_future(writer.run(write, on_committed=seen.append))
        await until(entered.is_set)  # committed, syncing
        assert seen == [1]  # NORMAL, and the hook ran before the sync
        other = connect()
        assert other.execute("SELECT value FROM kv WHERE key = 'k'").fetchone() == ("v",)  # visible
        other.close()
        assert not durable.done()
        gate.set()
        assert await durable == 1
        gate.clear()
        entered.clear()
        # a lease is answered without the sync, alone or in a batch with a durable write
        assert await writer.run(lambda conn: 7, durable=False) == 7
        assert not entered.is_set()
        inside, leave = threading.Event(), threading.Event()

        def block(conn: sqlite3.Connection) -> None:
            inside.set()
            leave.wait(30)

        blocker = asyncio.ensure_future(writer.run(block, durable=False))
        await until(inside.is_set)
        durable = asyncio.ensure_future(writer.run(write))
        lease = asyncio.ensure_future(writer.run(lambda conn: 8, durable=False))
        await until(lambda: writer._jobs.qsize() == 2)  # both queued behind it: one batch
        leave.set()
        await blocker
        assert await lease == 8  # answered while the durable write's sync is held
        await until(entered.is_set)
        assert not durable.done()
        gate.set()
        assert await durable == 1
    finally:
        gate.set()
        await asyncio.to_thread(writer.stop)
        wal.close()


async def test_a_failed_wal_sync_fails_the_durable_writes_only(tmp_path: Path) -> None:
    from daemon.store.writer import GroupCommitWriter

    def broken_sync() -> None:
        raise OSError(5, "Input/output error")

    writer = GroupCommitWriter(
        lambda: sqlite3.connect(tmp_path / "outbox.db", isolation_level=None, check_same_thread=False),
        sync=broken_sync,
    )
    writer.start()
    try:
        with pytest.raises(StoreUnavailable, match="could not sync its log"):
            await writer.run(lambda conn: 1)
        assert await writer.run(lambda conn: 2, durable=False) == 2
    finally:
        await asyncio.to_thread(writer.stop)


async def test_accept_uses_the_mode_in_force(store: Store) -> None:
    """A notification accepted during an outage gets its outage plan at once."""
    await _enter(store, ProviderState.OUTAGE)
    await store.accept([note(1), note(2, Severity.INFO)], T0)
    assert [c.notification.id for c in await store.claim("hook", 10, T0, T0)] == ["id-00001"]
    assert (await store.queue()).notifications == {"pending": 1, "held": 1}


async def test_acknowledged_tells_which_ids_someone_took_on(store: Store) -> None:
    await store.accept([note(1), note(2)], T0)
    assert await store.acknowledged(["id-00001", "id-00002"]) == set()
    assert await store.acknowledge("id-00001", "alice", "api", T0) == "acknowledged"
    assert await store.acknowledged(["id-00001", "id-00002", "id-99999"]) == {"id-00001"}
    assert await store.acknowledged([]) == set()


async def test_release_claims_after_crash(store: Store) -> None:
    """Claims left in flight by a dead process become pending again."""
    await store.accept([note(1)], T0)
    await store.claim("email", 1, T0, T0 + timedelta(minutes=5))
    assert await store.release_claims(T0) == 1
    assert len(await store.claim("email", 1, T0, T0 + timedelta(minutes=5))) == 1


async def test_renew_extends_live_claims_and_no_others(store: Store) -> None:
    """A claim waiting for a digest's send slot is renewed; a settled or unknown delivery is not, and
    one whose lease ran out is no longer the caller's (the lapsing one is released, the renewed one not)."""
    await store.accept([note(1), note(2), note(3)], T0)
    short = T0 + timedelta(milliseconds=200)
    (renewed,) = await store.claim("email", 1, T0, short)
    (lapsing,) = await store.claim("email", 1, T0, short)
    (done,) = await store.claim("email", 1, T0, T0 + timedelta(minutes=5))
    await store.record([Outcome(done.delivery.id, "delivered", T0, T0)], T0)
    asked = [renewed.delivery.id, done.delivery.id, 99_999]
    assert await store.renew(asked, T0, T0 + timedelta(minutes=5)) == {renewed.delivery.id}
    later = T0 + timedelta(seconds=1)

    async def released() -> bool:  # PostgreSQL leases run on the database's clock
        return await store.release_expired(later) == 1

    await _eventually(released)
    both = [renewed.delivery.id, lapsing.delivery.id]
    assert await store.renew(both, later, later + timedelta(minutes=5)) == {renewed.delivery.id}


async def test_a_digest_noted_on_its_deliveries_comes_back_with_their_claims(store: Store) -> None:
    """mark_digest notes the digest on claimed deliveries only; claimed again after a crash, they
    carry it (the dispatcher sends them as that digest again)."""
    await store.accept([note(1), note(2), note(3)], T0)
    carried = await store.claim("email", 2, T0, T0 + timedelta(minutes=5))
    await store.mark_digest([c.delivery.id for c in carried] + [3], "DABCDEFGHIJ")
    assert await store.release_claims(T0) == 2
    again = await store.claim("email", 3, T0, T0 + timedelta(minutes=5))
    assert [(c.notification.id, c.delivery.digest) for c in again] == [
        ("id-00001", "DABCDEFGHIJ"),
        ("id-00002", "DABCDEFGHIJ"),
        ("id-00003", None),
    ]


@pytest.mark.parametrize("late_kind", ["retry", "failed"])
async def test_a_late_outcome_of_a_claim_taken_again_is_history_only(store: Store, late_kind: str) -> None:
    """A send outlives its lease; the delivery is released and claimed again (by the same node
    here). The first send's outcome, arriving late, is history only: it neither drops the second
    claim's "delivered" (PostgreSQL kept the notification pending and sent it again) nor, failed,
    moves the plan on while the second claim is being sent (SQLite failed it over)."""
    await store.accept([note(1)], T0)
    (first,) = await store.claim("email", 1, T0, T0 + timedelta(milliseconds=200))
    later = T0 + timedelta(seconds=1)

    async def released() -> bool:  # PostgreSQL leases run on the database's clock
        return await store.release_expired(later) == 1

    await _eventually(released)
    (second,) = await store.claim("email", 1, later, later + timedelta(minutes=5))
    assert (second.delivery.id, second.delivery.attempts) == (first.delivery.id, 2)
    retry_at = T0 + timedelta(hours=1) if late_kind == "retry" else None
    kind: OutcomeKind = "retry" if late_kind == "retry" else "failed"
    late = Outcome(first.delivery.id, kind, T0, later, "timed out", retry_at, claim=first.delivery.attempts)
    await store.record([late], later)
    mid = await store.notification("id-00001")
    assert mid is not None and [d.state for d in mid.deliveries] == ["in_flight"]
    done = Outcome(second.delivery.id, "delivered", later, later, "250 ok", claim=second.delivery.attempts)
    await store.record([done], later)
    view = await store.notification("id-00001")
    assert view is not None and view.status == "delivered"
    assert [d.state for d in view.deliveries] == ["delivered"]
    assert [a.outcome for a in view.attempts] == [late_kind, "delivered"]


async def test_only_expired_leases_are_released_and_acknowledged_ones_are_superseded(store: Store) -> None:
    """release_expired leaves live claims alone; a lapsed one is pending again, or superseded once acked."""
    await store.accept([note(1), note(2), note(3)], T0)
    lapsing = await store.claim("email", 2, T0, T0 + timedelta(milliseconds=200))
    (live,) = await store.claim("email", 1, T0, T0 + timedelta(minutes=5))
    assert await store.acknowledge(lapsing[1].notification.id, "alice", "api", T0) == "acknowledged"

    async def released() -> bool:  # PostgreSQL leases run on the database's clock
        return await store.release_expired(T0 + timedelta(seconds=1)) == 2

    await _eventually(released)
    states = {}
    for claimed in (*lapsing, live):
        view = await store.notification(claimed.notification.id)
        assert view is not None
        states[claimed.notification.id] = view.deliveries[0].state.value
    assert states == {"id-00001": "pending", "id-00002": "superseded", "id-00003": "in_flight"}


async def test_provider_state_and_events_persist(store: Store) -> None:
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


async def test_undelivered_callback_moves_the_plan_on(store: Store) -> None:
    """A vendor's late "undelivered" for a delivered step fails it and starts the plan's next step."""
    await store.accept([note(1)], T0)
    (sent,) = await store.claim("email", 1, T0, T0 + timedelta(minutes=5))
    await store.record([Outcome(sent.delivery.id, "delivered", T0, T0, "ok", remote_id="SM1,SM2")], T0)
    assert not await store.record_callback(Callback("email", "SM9", False, "unknown", T0))
    assert await store.record_callback(Callback("email", "SM2", False, "30003 unreachable", T0))
    (backup,) = await store.claim("backup", 1, T0, T0 + timedelta(minutes=5))
    assert backup.delivery.step == 1
    view = await store.notification("id-00001")
    assert view is not None
    assert view.status == "pending"
    assert [a.outcome for a in view.attempts] == ["delivered", "callback:failed"]
    assert [a.delivery_id for a in view.attempts] == [sent.delivery.id, sent.delivery.id]


async def test_channel_health_counts_failures_since_the_last_success(store: Store) -> None:
    """Channel health shows the last success, the last error and the failures since that success."""
    await store.accept([note(1), note(2)], T0)
    first, second = await store.claim("email", 2, T0, T0 + timedelta(minutes=5))
    later = T0 + timedelta(seconds=5)
    await store.record([Outcome(first.delivery.id, "delivered", T0, T0, "ok")], T0)
    await store.record([Outcome(second.delivery.id, "retry", later, later, "421", retry_at=later)], later)
    (email,) = await store.channel_health()
    assert (email.channel, email.last_success_at, email.last_failure_at) == ("email", T0, later)
    assert (email.last_error, email.consecutive_failures) == ("421", 1)


async def test_forced_reroute_replans_within_the_same_mode(store: Store) -> None:
    """After a policy reload, unsent notifications get their new plan even though the mode is the same."""
    await store.accept([note(1)], T0)
    ((notification, plan),) = await store.unsent("", 10)
    assert plan.steps == ("email", "backup")
    new = {notification.id: Plan("critical", "healthy", ("hook",))}
    assert await store.reroute("healthy", new, T0) == 0
    assert await store.reroute("healthy", new, T0, force=True) == 1
    assert await store.claim("email", 1, T0, T0 + timedelta(minutes=5)) == []
    assert len(await store.claim("hook", 1, T0, T0 + timedelta(minutes=5))) == 1


async def test_history_recent_and_drills(store: Store) -> None:
    """The status page's reads: history since a time, the newest notifications, a drill's sends."""
    transition = Transition(T0, ProviderState.HEALTHY, ProviderState.SUSPECT, "1 failure")
    await store.save_provider(HealthSnapshot(natural=ProviderState.SUSPECT, since=T0), transition, T0)
    await store.record_check(CheckResult("smtp", CheckStatus.DOWN, "refused", 0.01, T0))
    drill = Notification("id-drill", "drill-key", T0 + timedelta(seconds=1), Severity.CRITICAL, "drill", "",
                         source="drill", labels={"drill": "d-1"})  # fmt: skip
    await store.accept([note(1), NewNotification(drill, plans_for(drill, ROUTES))], T0)
    events, checks = await store.history(T0 - timedelta(hours=1))
    assert events == [transition]
    assert [c.reason for c in checks] == ["refused"]
    assert await store.history(T0 + timedelta(seconds=1)) == ([], [])
    assert [v.notification.id for v in await store.recent(10)] == ["id-drill", "id-00001"]
    assert await store.latest_drill() == "d-1"
    assert [v.notification.id for v in await store.drill("d-1")] == ["id-drill"]


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


async def _enter(store: Store, state: ProviderState) -> None:
    await store.save_provider(HealthSnapshot(natural=state, since=T0), None, T0)


def test_plan_round_trip_for_defer() -> None:
    """A deferred plan has no steps."""
    assert Plan("rest", "outage", defer=True).steps == ()


# -- migrations ------------------------------------------------------------------------------------


def test_sqlite_schema_newer_than_this_release_is_refused(tmp_path: Path) -> None:
    """A SQLite file migrated by a newer release is refused rather than written with an older schema."""
    path = tmp_path / "outbox.db"
    assert migrations.migrate_sqlite(path) == [v for v, _ in migrations.scripts("sqlite")]
    assert migrations.migrate_sqlite(path) == []
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (9999, 0)")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNew, match="9999"):
        migrations.migrate_sqlite(path)


async def test_nodes_starting_together_migrate_once(pg_nodes: PgFactory, postgres_url: str) -> None:
    """Three nodes opening an empty database at once apply each migration exactly once."""
    nodes = await asyncio.gather(*(pg_nodes(f"n{i}") for i in range(3)))
    with admin(postgres_url) as conn:
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert versions == [(v,) for v, _ in migrations.scripts("postgres")]
    assert await nodes[0].migrate() == []


async def test_postgres_schema_newer_than_this_release_is_refused(
    pg_nodes: PgFactory, postgres_url: str
) -> None:
    """A database migrated by a newer release is refused at open."""
    await pg_nodes()
    with admin(postgres_url) as conn:
        conn.execute("INSERT INTO schema_migrations (version) VALUES (9999)")
    with pytest.raises(SchemaTooNew, match="9999"):
        await pg_nodes()


# -- several nodes sharing one PostgreSQL ----------------------------------------------------------


async def test_same_key_on_two_nodes_at_once_is_stored_once(pg_nodes: PgFactory) -> None:
    """Two nodes accepting the same idempotency keys concurrently store each once and agree on its id."""
    a, b = await pg_nodes("a"), await pg_nodes("b")
    results = await asyncio.gather(
        *(a.accept([note(i, key=f"k{i}")], T0) for i in range(100)),
        *(b.accept([note(1000 + i, key=f"k{i}")], T0) for i in range(100)),
    )
    for i in range(100):
        (first,), (second,) = results[i], results[100 + i]
        assert first.id == second.id
        assert sorted([first.duplicate, second.duplicate]) == [False, True]
    assert (await a.queue()).notifications == {"pending": 100}


async def _drain(node: PostgresStore) -> list[str]:
    """Claim on "email", four at a time, until nothing is left: the notification ids claimed."""
    got: list[str] = []
    while batch := await node.claim("email", 4, T0, T0 + timedelta(minutes=5)):
        got.extend(c.notification.id for c in batch)
    return got


async def test_skip_locked_claims_by_two_nodes_never_overlap(pg_nodes: PgFactory) -> None:
    """Nodes claiming the same channel at once each get different deliveries, and together all."""
    a, b = await pg_nodes("a"), await pg_nodes("b")
    await a.accept([note(i) for i in range(300)], T0)

    claims = await asyncio.gather(*(_drain(node) for node in (a, b, a, b, a, b)))
    by_a = [i for got in claims[0::2] for i in got]
    by_b = [i for got in claims[1::2] for i in got]
    assert by_a
    assert by_b
    assert sorted(by_a + by_b) == [f"id-{i:05d}" for i in range(300)]


def test_connections_notice_a_vanished_server(postgres_url: str) -> None:
    """TCP keepalives and a user timeout on every connection the store makes (pool, LISTEN,
    migrations): a peer gone without a word errors within about half a minute, not fifteen."""
    with psycopg.connect(postgres_url, **connect_args("backchannel", "test", 5)) as conn:
        given = conn.info.get_parameters()
    assert {k: given.get(k) for k in ("keepalives", "keepalives_idle", "tcp_user_timeout")} == {
        "keepalives": "1",
        "keepalives_idle": "10",
        "tcp_user_timeout": "30000",
    }


async def test_accepts_resume_as_soon_as_the_server_is_back(postgres_url: str) -> None:
    """PostgreSQL down for 20 s (every connection reset, new ones refused), a client retrying every
    second: the first accept after it is back commits within the connect timeout. The pool's
    doubling reconnect delay kept callers at 503 for up to half a minute after a minute's outage."""
    proxy, url = await in_front_of_postgres(postgres_url)
    store = PostgresStore(url, node="restarted", connect_timeout_s=2, reconnect_s=0.5)
    await store.open()
    try:
        await store.accept([note(0)], T0)
        await proxy.down()
        down_until = time.monotonic() + 20
        n = 1
        while time.monotonic() < down_until:
            with pytest.raises(StoreUnavailable):
                await store.accept([note(n)], T0)
            await asyncio.sleep(1)
        await proxy.start()
        back = time.monotonic()
        await store.accept([note(n)], T0)  # within connect_timeout_s, or StoreUnavailable
        assert time.monotonic() - back < 5
    finally:
        await store.close()
        await proxy.down()


async def test_the_readiness_probes_read_and_commit_and_keep_nothing(store: Store) -> None:
    """/healthz's probes: a read and a durable commit, on either store; the provider row and
    the outbox are as they were."""
    await store.accept([note(0)], T0)
    provider, queue = await store.provider(), await store.queue()
    await store.probe(commit=False)
    await store.probe(commit=True)
    assert (await store.provider(), await store.queue()) == (provider, queue)


async def test_the_readiness_probes_fail_while_postgresql_is_unreachable(postgres_url: str) -> None:
    """Every connection reset and new ones refused: both probes are StoreUnavailable, and both
    pass again once the server is back."""
    proxy, url = await in_front_of_postgres(postgres_url)
    store = PostgresStore(url, node="probed", connect_timeout_s=1, reconnect_s=0.2)
    await store.open()
    try:
        await proxy.down()
        for commit in (False, True):
            with pytest.raises(StoreUnavailable):
                await store.probe(commit=commit)
        await proxy.start()
        await until(lambda: _probes(store), deadline_s=10)
    finally:
        await store.close()
        await proxy.down()


async def _probes(store: PostgresStore) -> bool:
    try:
        await store.probe(commit=False)
        await store.probe(commit=True)
    except StoreUnavailable:
        return False
    return True


async def test_nodes_claim_at_read_committed_whatever_the_servers_default(postgres_url: str) -> None:
    """With the session default SERIALIZABLE (as a database's or role's setting makes it), two nodes
    draining at once still claim every delivery once and fail no claim: the store's connections run
    at READ COMMITTED, which its locking is written for (they failed each other before)."""
    url = postgres_url.replace("options=", "options=-cdefault_transaction_isolation%3Dserializable%20", 1)
    a, b = (
        PostgresStore(url, node="iso-a", reconnect_s=0.1),
        PostgresStore(url, node="iso-b", reconnect_s=0.1),
    )
    await a.open()
    await b.open()
    try:
        await a.accept([note(i) for i in range(200)], T0)

        claims = await asyncio.gather(*(_drain(node) for node in (a, b, a, b, a, b)))
    finally:
        await a.close()
        await b.close()
    assert sorted(i for got in claims for i in got) == [f"id-{i:05d}" for i in range(200)]


async def test_live_claim_of_another_node_is_left_alone(pg_nodes: PgFactory) -> None:
    """Another node's start-up releases nothing of a live claim, and cannot claim it."""
    a, b = await pg_nodes("a"), await pg_nodes("b")
    await a.accept([note(1)], T0)
    assert len(await a.claim("email", 1, T0, T0 + timedelta(minutes=5))) == 1
    assert await b.release_claims(T0) == 0
    assert await b.claim("email", 1, T0, T0 + timedelta(minutes=5)) == []
    assert await b.due() == {}


async def test_a_node_renews_only_its_own_claims(pg_nodes: PgFactory) -> None:
    """Another node cannot extend a claim it does not hold."""
    a, b = await pg_nodes("a"), await pg_nodes("b")
    await a.accept([note(1)], T0)
    (claim,) = await a.claim("email", 1, T0, T0 + timedelta(minutes=5))
    assert await b.renew([claim.delivery.id], T0, T0 + timedelta(minutes=5)) == set()
    assert await a.renew([claim.delivery.id], T0, T0 + timedelta(minutes=5)) == {claim.delivery.id}


async def test_expired_lease_is_taken_over(pg_nodes: PgFactory) -> None:
    """A lease run out on the database's clock is taken over; the first node's late outcome is history."""
    a, b = await pg_nodes("a"), await pg_nodes("b")
    await a.accept([note(1)], T0)
    (first,) = await a.claim("email", 1, T0, T0 + timedelta(milliseconds=200))
    assert await b.release_expired(T0) == 0  # still a's: its lease runs on the database's clock

    async def released() -> bool:
        return await b.release_expired(T0) == 1

    await _eventually(released)
    assert await _has_due(b, "email")
    (second,) = await b.claim("email", 1, T0, T0 + timedelta(minutes=5))
    assert second.delivery.id == first.delivery.id
    assert second.delivery.attempts == 2
    await a.record([Outcome(first.delivery.id, "failed", T0, T0, "late")], T0)
    assert (await a.queue()).deliveries == {"in_flight": 1}
    await b.record([Outcome(second.delivery.id, "delivered", T0, T0, "250 ok")], T0)
    view = await b.notification("id-00001")
    assert view is not None
    assert view.status == "delivered"
    assert [a.outcome for a in view.attempts] == ["failed", "delivered"]


async def test_an_expired_lease_from_before_a_mode_change_is_released_and_replanned(
    pg_nodes: PgFactory,
) -> None:
    """A dead node's claim of an outage delivery is released after the recovery, so it is re-planned."""
    a, b = await pg_nodes("a"), await pg_nodes("b")
    await _enter(a, ProviderState.OUTAGE)
    await a.accept([note(1)], T0)
    (claimed,) = await a.claim("hook", 1, T0, T0 + timedelta(milliseconds=200))
    await _enter(b, ProviderState.HEALTHY)
    assert await b.reroute_candidates("healthy", 10) == []  # held back by the claim in flight

    async def released() -> bool:
        return await b.release_expired(T0) == 1

    await _eventually(released)
    assert [n.id for n in await b.reroute_candidates("healthy", 10)] == [claimed.notification.id]


async def test_restarted_node_takes_back_its_own_claims(pg_nodes: PgFactory) -> None:
    """A node restarted under the same name releases its claims from before at once."""
    before = await pg_nodes("stable")
    await before.accept([note(1)], T0)
    await before.claim("email", 1, T0, T0 + timedelta(minutes=5))
    await before.close()
    after = await pg_nodes("stable")
    assert await after.release_claims(T0) == 1
    assert len(await after.claim("email", 1, T0, T0 + timedelta(minutes=5))) == 1


async def test_new_work_wakes_a_waiting_node(pg_nodes: PgFactory) -> None:
    """LISTEN/NOTIFY: work accepted on one node wakes another node's wait at once."""
    a, b = await pg_nodes("a"), await pg_nodes("b")
    waiting = asyncio.create_task(b.wait_for_work(60))
    await a.accept([note(1)], T0)
    assert await waiting


async def test_listener_comes_back_after_its_connection_is_killed(
    pg_nodes: PgFactory, postgres_server: str
) -> None:
    """When the server drops the LISTEN connection, the node reconnects and is woken again."""
    a, b = await pg_nodes("a"), await pg_nodes("b")
    killed = _terminate(postgres_server, f"backchannel listen {b.node}")
    assert killed
    await _eventually(lambda: _backends(postgres_server, f"backchannel listen {b.node}", exclude=killed))
    await _eventually(lambda: _true(b.listening))
    waiting = asyncio.create_task(b.wait_for_work(60))
    await a.accept([note(1)], T0)
    assert await waiting


async def test_connection_dropped_by_the_server_is_replaced(
    pg_nodes: PgFactory, postgres_server: str
) -> None:
    """Pooled connections killed by the server (a restart, a failover) are replaced before use."""
    a = await pg_nodes("a")
    await a.accept([note(1)], T0)
    assert _terminate(postgres_server, f"backchannel {a.node}")
    await a.accept([note(2)], T0)
    assert (await a.queue()).notifications == {"pending": 2}


async def test_failed_commit_is_unavailable_and_stores_nothing(
    pg_nodes: PgFactory, postgres_url: str
) -> None:
    """A commit PostgreSQL refuses fails every accept sharing it with StoreUnavailable; none is stored."""
    a = await pg_nodes("a")
    with admin(postgres_url) as conn:
        conn.execute(REFUSE_AT_COMMIT)
    refused = NewNotification(replace(note(2).notification, subject="refuse"), note(2).plans)
    results = await asyncio.gather(a.accept([note(1)], T0), a.accept([refused], T0), return_exceptions=True)
    assert [type(r) for r in results] == [StoreUnavailable, StoreUnavailable]
    assert (await a.queue()).notifications == {}
    await a.accept([note(3)], T0)


async def test_bad_call_does_not_fail_accepts_sharing_its_transaction(pg_nodes: PgFactory) -> None:
    """A call that raises (here: no plan for the mode in force) fails alone; its neighbours commit."""
    a = await pg_nodes("a")
    broken = NewNotification(note(2).notification, {})
    results = await asyncio.gather(a.accept([note(1)], T0), a.accept([broken], T0), return_exceptions=True)
    assert results[0] == [Accepted("id-00001", duplicate=False)]
    assert isinstance(results[1], KeyError)
    assert (await a.queue()).notifications == {"pending": 1}


async def test_a_reused_key_is_refused_in_the_shared_transaction_without_rolling_it_back(
    pg_nodes: PgFactory,
) -> None:
    """One transaction of three calls, the middle one reusing a key with another request: it is
    refused there (KeyReused in its place), the other two commit in that same transaction rather
    than each alone after a rollback (a client repeating its mistake costs the others nothing)."""
    a = await pg_nodes("a")
    await a.accept([keyed(0, "taken", "aaa")], T0)
    calls = [([note(1)], T0), ([keyed(2, "fresh", "ccc"), keyed(3, "taken", "bbb")], T0), ([note(4)], T0)]
    results = await a._transaction(lambda conn: postgres_accept_tx.accept(conn, calls, a.node))
    assert results[0] == [Accepted("id-00001", duplicate=False)]
    assert isinstance(results[1], KeyReused) and results[1].index == 1
    assert results[2] == [Accepted("id-00004", duplicate=False)]
    assert await a.notification("id-00002") is None


async def test_unreachable_server_is_unavailable_at_open() -> None:
    """Opening a store whose server does not answer raises StoreUnavailable, naming the cause."""
    s = PostgresStore("postgresql://postgres@127.0.0.1:1/test", connect_timeout_s=1)
    with pytest.raises(StoreUnavailable, match="cannot open"):
        await s.open()


# A deferred constraint trigger runs at COMMIT: the one way to make exactly the commit fail.
REFUSE_AT_COMMIT = """
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused at commit'; END $$;
CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON notifications
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.subject = 'refuse') EXECUTE FUNCTION refuse();
"""


async def _eventually(check: Callable[[], Awaitable[bool]], deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not await check():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.05)


async def _true(value: bool) -> bool:
    return value


async def _has_due(node: PostgresStore, channel: str) -> bool:
    return channel in await node.due()


def _terminate(url: str, application_name: str) -> list[int]:
    """Kill the server side of a node's connections, as a PostgreSQL restart would."""
    with admin(url) as conn:
        rows = conn.execute(
            # in the select list, not the WHERE: there the planner may call it before filtering
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchall()
    return [int(str(pid)) for pid, _ in rows]


async def _backends(url: str, application_name: str, exclude: list[int]) -> bool:
    with admin(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        ).fetchall()
    return any(int(str(pid)) not in exclude for (pid,) in rows)


async def test_a_migration_waiting_for_a_running_nodes_lock_gives_up(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling upgrade: a migration that needs a lock a running node's transaction holds gives
    up after PG_LOCK_TIMEOUT_MS with nothing applied, instead of queueing every node's writes on
    that table behind it for as long as the transaction runs."""
    monkeypatch.setattr(migrations, "PG_LOCK_TIMEOUT_MS", 300)
    node = PostgresStore(postgres_url, node="upgrading")
    assert await node.migrate() != []
    with admin(postgres_url) as conn:  # migration 10 not yet applied: the previous release's schema
        conn.execute("DROP INDEX notifications_unsent, notifications_unsent_mode")
        conn.execute("DELETE FROM schema_migrations WHERE version = 10")
    with admin(postgres_url) as running:  # a running node's insert, its transaction still open
        running.execute("BEGIN")
        running.execute("LOCK TABLE notifications IN ROW EXCLUSIVE MODE")
        with pytest.raises(migrations.MigrationBlocked, match="nothing was applied"):
            await asyncio.wait_for(node.migrate(), timeout=20)
        running.execute("ROLLBACK")
    assert await node.migrate() == [10]


async def test_a_node_starting_while_another_migrates_waits_for_it(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nodes starting together: one waits for the other's migration however long it runs (waiting
    for the migration lock holds up no table), rather than give up after PG_LOCK_TIMEOUT_MS as
    it does for a table's lock."""
    monkeypatch.setattr(migrations, "PG_LOCK_TIMEOUT_MS", 300)
    node = PostgresStore(postgres_url, node="starting")
    with admin(postgres_url) as migrating:  # another node's migration, still under way
        migrating.execute("BEGIN")
        migrating.execute("SELECT pg_advisory_xact_lock(%s)", (migrations.PG_MIGRATION_LOCK,))
        waiting = asyncio.create_task(node.migrate())
        done, _ = await asyncio.wait({waiting}, timeout=1.0)
        assert not done, waiting.exception()
        migrating.execute("COMMIT")
    assert 12 in await asyncio.wait_for(waiting, 10)
