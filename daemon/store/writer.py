"""Group commit for SQLite: one writer thread, many callers sharing each fsync.

Callers hand in small functions of a connection. The writer takes everything queued, runs it
in one ``BEGIN IMMEDIATE`` transaction and commits once, so a hundred concurrent requests pay
for one fsync. If any function fails, the batch is rolled back and each function is re-run in
its own transaction, so one bad write never takes the others down with it and nothing is half
committed. Only after COMMIT returns does a caller's coroutine resume.

Durability per job: a job run with ``durable=False`` (a claim's lease) may be lost with power,
so a batch of such jobs alone commits with ``synchronous=NORMAL``: in WAL mode that appends to the
log without the fsync, and the database stays consistent whatever is lost. Any durable job in a
batch makes the whole batch commit with ``synchronous=FULL``, and that fsync covers every earlier
commit in the log as well. Accepts and outcomes are durable; a lost lease only means the delivery
is pending again after a restart (sent once more: at least once already allows it).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from daemon.store.base import StoreUnavailable

T = TypeVar("T")
#: a function of the connection, its caller's future, and whether its commit must survive power loss
Job = tuple[Callable[[sqlite3.Connection], Any], "Future[Any]", bool]

log = logging.getLogger(__name__)

#: how many queued writes share one transaction at most
MAX_BATCH = 512
#: how soon to try again for the write lock while another process holds it
RETRY_S = 0.0001


class GroupCommitWriter:
    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        busy_timeout_s: float = 5.0,
        retry_s: float = RETRY_S,
    ) -> None:
        self._connect = connect
        self._busy_timeout_s = busy_timeout_s
        self._retry_s = retry_s
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._ready: Future[None] = Future()
        #: the connection's ``synchronous`` setting now (it opens with FULL)
        self._durable = True

    def start(self) -> None:
        self._thread.start()
        self._ready.result()

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run ``fn`` in a transaction; ``durable=False`` lets a batch of such jobs skip the fsync."""
        future: Future[T] = Future()
        self._jobs.put((fn, future, durable))
        return await asyncio.wrap_future(future)

    def _run(self) -> None:
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            self._ready.set_exception(StoreUnavailable(f"cannot open the store: {exc}"))
            return
        # BUSY at once instead of SQLite's own waits: see _begin
        conn.execute("PRAGMA busy_timeout=0")
        self._ready.set_result(None)
        try:
            while (batch := self._next_batch()) is not None:
                self._commit(conn, batch)
        finally:
            conn.close()

    def _next_batch(self) -> list[Job] | None:
        batch: list[Job] = []
        while not batch:
            first = self._jobs.get()
            if first is None:
                return None
            batch = self._runnable([first])
        while len(batch) < MAX_BATCH:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._jobs.put(None)
                break
            batch.extend(self._runnable([job]))
        return batch

    @staticmethod
    def _runnable(jobs: list[Job]) -> list[Job]:
        """Drop jobs whose caller gave up (cancelled) before they started; the rest can no longer be."""
        return [job for job in jobs if job[1].set_running_or_notify_cancel()]

    def _commit(self, conn: sqlite3.Connection, batch: list[Job]) -> None:
        try:
            results = self._transaction(conn, batch)
        except _JobFailed:
            for job in batch:
                self._commit_alone(conn, job)
            return
        except sqlite3.Error as exc:
            self._fail(batch, exc)
            return
        for (_, future, _), result in zip(batch, results, strict=True):
            future.set_result(result)

    def _commit_alone(self, conn: sqlite3.Connection, job: Job) -> None:
        try:
            (result,) = self._transaction(conn, [job])
        except _JobFailed as failed:
            job[1].set_exception(_wrap(failed.cause))
        except sqlite3.Error as exc:
            self._fail([job], exc)
        else:
            job[1].set_result(result)

    def _transaction(self, conn: sqlite3.Connection, batch: list[Job]) -> list[Any]:
        self._synchronous(conn, any(durable for _, _, durable in batch))
        self._begin(conn)
        try:
            results = []
            for fn, _, _ in batch:
                try:
                    results.append(fn(conn))
                except Exception as exc:
                    raise _JobFailed(exc) from exc
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        return results

    def _begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, tried again every ``retry_s`` while another process holds the write lock.

        Several processes may write to one store (the daemon and its intake workers). SQLite's own
        busy handler sleeps 1, 2, 5, 10... up to 100 ms between tries, so a process that commits
        without pause (an intake worker under a burst) kept the lock from one that had waited
        (the daemon's claims and outcomes): delivery stalled for seconds. Short, even retries give
        each process its turn; a larger ``retry_s`` (the workers') yields to a smaller one.
        """
        deadline = 0.0
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:  # BUSY_RECOVERY etc. too
                    raise
                now = time.monotonic()
                deadline = deadline or now + self._busy_timeout_s
                if now >= deadline:
                    raise
            time.sleep(self._retry_s)

    def _synchronous(self, conn: sqlite3.Connection, durable: bool) -> None:
        """FULL for a batch that must survive power loss, NORMAL (no fsync in WAL mode) otherwise."""
        if durable != self._durable:
            conn.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
            self._durable = durable

    @staticmethod
    def _fail(batch: list[Job], exc: sqlite3.Error) -> None:
        log.error("store commit failed: %s", exc)
        for _, future, _ in batch:
            future.set_exception(_wrap(exc))


class _JobFailed(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _wrap(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        unavailable = StoreUnavailable(f"the store could not commit: {exc}")
        unavailable.__cause__ = exc
        return unavailable
    return exc
