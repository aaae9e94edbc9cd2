"""Quick store calls run on the event loop's own connection when they can.

Every pass of the dispatcher asks which channels have work due (an indexed read of a few
rows, about 50 µs) and claims what is due (a short write that is not durable anyway, see
``SqliteStore.claim``). Handed to the reader or writer thread, each cost a thread wake-up and a
loop wake-up, about 0.26 ms on the reference machine, on the path from an accepted alert to its
delivery. Run here instead they cost what the query costs. A lone accept (one request while the
writer thread is idle) commits here too; the store then tells its listeners and has the WAL
synced on the writer's sync thread before the caller is answered (``sqlite_accepts.Accepts._here``),
as for the writer thread's commits.

Nothing here waits for a lock: the connection has SQLite's busy handler off, so a claim finding
the write lock taken (the writer thread's commit, another process's) returns :data:`MISSED` at
once and the store hands the claim to its writer thread as before, which waits its turn. Any
other SQLite error also falls back to the thread, which reports it as the store always has (an
error other than a busy lock is logged once here). The connection never runs a checkpoint
(``wal_autocheckpoint=0``; the writer's connection does). Two bounded exceptions, both rare:
the first write after a checkpoint emptied the WAL starts it over and fsyncs its new header
(once per WAL cycle, about 1,000 pages), and after a process died while updating the WAL index,
SQLite itself may sleep a little before it reports the index unusable (then MISSED).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable
from typing import Final, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class Missed:
    def __repr__(self) -> str:
        return "MISSED"


#: the call could not run here without waiting: run it on the thread instead
MISSED: Final = Missed()


class InlineConnection:
    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        self._seen: set[str] = set()

    def open(self) -> None:
        conn = self._connect()
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable commits are synced after (walsync)
        conn.execute("PRAGMA wal_autocheckpoint=0")
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T | Missed:
        if self._conn is None:
            return MISSED
        try:
            return fn(self._conn)
        except sqlite3.Error as exc:
            self._noted(exc)
            return MISSED

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T | Missed:
        """``fn`` in its own transaction if the write lock is free right now, else MISSED."""
        conn = self._conn
        if conn is None:
            return MISSED
        if conn.in_transaction:  # a rollback failed earlier: never run anything on it again
            self._give_up()
            return MISSED
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._noted(exc)
            return MISSED
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._noted(exc)
            self._rollback(conn)
            return MISSED
        except BaseException:
            self._rollback(conn)
            raise
        return result

    def _rollback(self, conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.rollback()
        except sqlite3.Error as exc:
            log.warning("the store's inline connection could not roll back, closed: %s", exc)
            self._give_up()

    def _give_up(self) -> None:
        """Close the connection (releasing any lock it holds); everything goes to the threads."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _noted(self, exc: sqlite3.Error) -> None:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF == sqlite3.SQLITE_BUSY:
            return
        message = str(exc)
        if message not in self._seen:
            self._seen.add(message)
            log.warning("store call on the event loop fell back to its thread: %s", message)
