"""The group-commit writer and SQLite's one write lock shared with other processes' connections.

Intake workers and the daemon write to one SQLite file. The writer asks for the lock itself
(SQLite's busy handler is off on its connection): it gets it as soon as the holder commits, and
gives up with StoreUnavailable after the store's busy timeout, with nothing committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.store.base import StoreUnavailable
from daemon.store.values import Accepted
from daemon.store.walsync import WalSync
from daemon.store.writer import GroupCommitWriter
from tests.integration.test_store import T0, note
from tests.support import until


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "lock.db"
    conn = _connect(path)
    conn.execute("CREATE TABLE t (v INTEGER)")
    conn.close()
    return path


class LockHolder:
    """Another process's writer: a thread that takes the write lock and keeps it until released."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._held, self._release = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._hold)

    async def take(self) -> None:
        self._thread.start()
        assert await asyncio.to_thread(self._held.wait, 10)

    def release(self) -> None:
        self._release.set()
        if self._thread.is_alive():
            self._thread.join()

    def _hold(self) -> None:
        conn = _connect(self._path)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
        self._held.set()
        self._release.wait(10)
        conn.execute("COMMIT")
        conn.close()


@contextlib.asynccontextmanager
async def _writer_behind_a_held_lock(
    db: Path, busy_timeout_s: float, retry_s: float
) -> AsyncIterator[tuple[GroupCommitWriter, LockHolder]]:
    writer = GroupCommitWriter(
        lambda: _connect(db), sync=WalSync(db).sync, busy_timeout_s=busy_timeout_s, retry_s=retry_s
    )
    writer.start()
    holder = LockHolder(db)
    try:
        await holder.take()
        yield writer, holder
    finally:
        holder.release()
        await asyncio.to_thread(writer.stop)


def _values(db: Path) -> list[int]:
    conn = _connect(db)
    try:
        return sorted(v for (v,) in conn.execute("SELECT v FROM t"))
    finally:
        conn.close()


async def test_a_write_waits_for_another_writer_and_then_commits(db: Path) -> None:
    async with _writer_behind_a_held_lock(db, busy_timeout_s=10, retry_s=0.0001) as (writer, holder):
        job = asyncio.create_task(writer.run(lambda conn: conn.execute("INSERT INTO t VALUES (2)").rowcount))
        await asyncio.sleep(0.2)  # not a wait for a result: the job must still be blocked after it
        assert not job.done()
        holder.release()
        assert await asyncio.wait_for(job, 10) == 1
    assert _values(db) == [1, 2]


async def test_a_write_gives_up_after_the_busy_timeout_with_nothing_committed(db: Path) -> None:
    async with _writer_behind_a_held_lock(db, busy_timeout_s=0.2, retry_s=0.001) as (writer, _):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked"):
            await writer.run(lambda conn: conn.execute("INSERT INTO t VALUES (3)"))
        assert time.monotonic() - started >= 0.2
    assert _values(db) == [1]


async def test_a_claim_finding_the_lock_taken_waits_on_the_writer_thread(tmp_path: Path) -> None:
    """The dispatcher's claim runs on the loop's connection only when the lock is free at once."""
    from daemon.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "outbox.db")
    await store.open()
    holder = LockHolder(tmp_path / "outbox.db")
    try:
        now = datetime.now(UTC)
        assert await store.claim("hook", 4, now, now) == []  # free: inline
        assert await store.due() == {}
        await holder.take()
        assert await store.due() == {}  # reads never wait in WAL mode
        claim = asyncio.create_task(store.claim("hook", 4, now, now))
        started = time.monotonic()
        await asyncio.sleep(0.2)  # not a wait for a result: the claim must still be waiting after it
        assert not claim.done()
        # the event loop went on meanwhile: the claim did not sit in SQLite's busy wait (5 s) on it
        assert time.monotonic() - started < 4
        holder.release()
        assert await asyncio.wait_for(claim, 10) == []
    finally:
        holder.release()
        await store.close()


def test_the_inline_connection_falls_back_and_never_keeps_a_transaction(db: Path) -> None:
    from daemon.store.sqlite_inline import InlineConnection, Missed

    inline = InlineConnection(lambda: _connect(db))
    inline.open()
    assert inline.write(lambda conn: conn.execute("INSERT INTO t VALUES (7)").rowcount) == 1
    # a SQL error: rolled back, MISSED (the thread path reports it), the connection still usable
    assert isinstance(inline.write(lambda conn: conn.execute("INSERT INTO nowhere VALUES (1)")), Missed)
    with pytest.raises(ZeroDivisionError):  # a bug in the caller's function: rolled back, raised
        inline.write(lambda conn: (conn.execute("INSERT INTO t VALUES (8)"), 1 / 0))
    assert inline.read(lambda conn: [v for (v,) in conn.execute("SELECT v FROM t")]) == [7]
    # a connection left in a transaction (a failed rollback) is closed, not used again
    conn = inline._conn
    assert conn is not None
    conn.execute("BEGIN")
    assert isinstance(inline.write(lambda c: c.execute("INSERT INTO t VALUES (9)")), Missed)
    assert isinstance(inline.read(lambda c: c.execute("SELECT 1").fetchall()), Missed)
    other = _connect(db)
    other.execute("BEGIN IMMEDIATE")  # its lock was released with it
    other.execute("ROLLBACK")
    other.close()
    inline.close()


async def test_a_lone_accept_commits_on_the_loop_and_is_answered_after_the_wal_sync(tmp_path: Path) -> None:
    """No writer-thread hand-off for a lone accept; visible before the sync, answered after it."""
    from daemon.store.sqlite import SqliteStore
    from daemon.store.sqlite_accepts import CHECKPOINT_EVERY

    store = SqliteStore(tmp_path / "outbox.db")
    await store.open()
    synced, gate, handed = threading.Event(), threading.Event(), []
    real_sync, real_run = store._writer._sync, store._writer.run

    def gated_sync() -> None:
        gate.wait(30)
        real_sync()
        synced.set()

    async def counted_run(*args: Any, **kwargs: Any) -> Any:
        handed.append(args[0])
        return await real_run(*args, **kwargs)

    store._writer._sync = gated_sync
    store._writer.run = counted_run  # type: ignore[method-assign]
    seen: list[list[Accepted]] = []
    try:
        accept = asyncio.create_task(store.accept([note(1)], T0, on_visible=seen.append))
        await until(lambda: bool(seen))  # committed and visible, the sync held
        assert seen == [[Accepted(id="id-00001", duplicate=False)]]
        other = _connect(tmp_path / "outbox.db")
        assert other.execute("SELECT id FROM notifications").fetchall() == [("id-00001",)]
        other.close()
        assert not accept.done() and not synced.is_set()
        gate.set()
        assert await accept == [Accepted(id="id-00001", duplicate=False)]
        assert synced.is_set()
        assert handed == []  # the writer thread was never involved
        # concurrent accepts share the writer thread's one transaction
        together = await asyncio.gather(*(store.accept([note(i)], T0) for i in range(2, 7)))
        assert [a[0].id for a in together] == [f"id-{i:05d}" for i in range(2, 7)]
        assert len(handed) == 1
        # and every CHECKPOINT_EVERY-th lone accept goes there too (its connection checkpoints)
        for i in range(7, 7 + CHECKPOINT_EVERY):
            await store.accept([note(i)], T0)
        assert len(handed) == 2
    finally:
        gate.set()
        await store.close()


def test_the_wal_sync_never_syncs_a_replaced_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.store.walsync import WalSync

    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(os.fstat(fd).st_ino), real(fd)))
    wal = WalSync(tmp_path / "x.db")
    (tmp_path / "x.db-wal").write_bytes(b"one")
    held = os.stat(tmp_path / "x.db-wal").st_ino
    wal.sync()
    wal.sync()
    assert synced == [held, held]
    (tmp_path / "new").write_bytes(b"two")
    os.replace(tmp_path / "new", tmp_path / "x.db-wal")  # SQLite still writes to the one it holds
    with pytest.raises(OSError, match="was replaced"):
        wal.sync()
    assert synced == [held, held]
    wal.close()


def test_a_failed_sync_is_final_until_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After EIO Linux may drop the failed pages: a later sync 'succeeding' proves nothing."""
    from daemon.store.walsync import SyncFailed, WalSync

    (tmp_path / "x.db-wal").write_bytes(b"log")
    wal = WalSync(tmp_path / "x.db")
    wal.sync()
    real = os.fdatasync

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OSError, match="Input/output error"):
        wal.sync()
    monkeypatch.setattr(os, "fdatasync", real)  # the disk "works" again
    with pytest.raises(SyncFailed, match="restart"):
        wal.sync()
    wal.close()
    fresh = WalSync(tmp_path / "x.db")  # what a restarted process has
    fresh.sync()
    fresh.close()


async def test_a_job_returning_an_unread_cursor_does_not_lock_the_writer_out(db: Path) -> None:
    """A cursor with rows left, returned by a job, used to keep the writer's snapshot open past its
    commit: after another connection committed, every later write waited out the busy timeout and
    failed ('database is locked', SQLITE_BUSY_SNAPSHOT). The writer closes such a cursor."""
    writer = GroupCommitWriter(lambda: _connect(db), sync=WalSync(db).sync, busy_timeout_s=10)
    writer.start()
    other = _connect(db)
    try:
        returned = await writer.run(lambda conn: conn.execute("SELECT v FROM t UNION ALL SELECT 0"))
        other.execute("INSERT INTO t VALUES (4)")  # another connection commits meanwhile
        started = time.monotonic()
        assert await writer.run(lambda conn: conn.execute("INSERT INTO t VALUES (5)").rowcount) == 1
        assert time.monotonic() - started < 5  # not the busy timeout's 10 s
        del returned
    finally:
        other.close()
        await asyncio.to_thread(writer.stop)
    assert _values(db) == [4, 5]
