"""Group commit for SQLite: one writer thread, many callers sharing each fsync.

Callers hand in small functions of a connection. The writer takes everything queued, runs it
in one ``BEGIN IMMEDIATE`` transaction and commits once, so a hundred concurrent requests pay
for one fsync. If any function fails, the batch is rolled back and each function is re-run in
its own transaction, so one bad write never takes the others down with it and nothing is half
committed. A caller's coroutine resumes only after COMMIT returns (and, for a durable write, the
sync that follows it, below).

Durability per job: every batch commits with ``synchronous=NORMAL`` (appended to the WAL, visible
to other connections, not yet on disk) and the write lock is released at once. A job run with
``durable=False`` (a claim's lease) is answered then: a lease lost with power only means the
delivery is pending again after a restart (sent once more: at least once already allows it).
A durable job (the default: accepts, outcomes) is answered only after ``sync`` (one
``fdatasync`` of the WAL, :mod:`daemon.store.walsync`) has made its commit, and every earlier
one, survive a power cut. Between the commit and the sync its ``on_committed`` hook runs, on this
thread: an accept is visible there, so the dispatcher can start delivering it while the disk syncs.
The syncs run on a thread of their own: while one batch waits for the disk the writer already
runs the next transaction, and one sync answers every batch committed before it started.
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
#: a function of the connection, its caller's future, whether its commit must survive power loss,
#: and what to call (on the writer thread) with its result once committed, before the sync
Job = tuple[Callable[[sqlite3.Connection], Any], "Future[Any]", bool, Callable[[Any], None] | None]

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
        sync: Callable[[], None],
        busy_timeout_s: float = 5.0,
        retry_s: float = RETRY_S,
    ) -> None:
        self._connect = connect
        self._sync = sync
        self._busy_timeout_s = busy_timeout_s
        self._retry_s = retry_s
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        #: committed durable jobs (future, result) waiting for a sync; None stops the sync thread
        self._syncs: queue.SimpleQueue[list[tuple[Future[Any], Any]] | None] = queue.SimpleQueue()
        self._syncer = threading.Thread(target=self._sync_loop, name="store-sync", daemon=True)
        self._ready: Future[None] = Future()
        #: jobs handed in by :meth:`run` and not yet answered (the event loop's count)
        self._outstanding = 0

    def start(self) -> None:
        self._thread.start()
        self._ready.result()
        self._syncer.start()

    def stop(self) -> None:
        """Every job handed in is answered first (its sync included)."""
        self._jobs.put(None)
        self._thread.join()
        if self._syncer.ident is not None:
            self._syncs.put(None)
            self._syncer.join()

    async def run(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        durable: bool = True,
        on_committed: Callable[[T], None] | None = None,
    ) -> T:
        """Run ``fn`` in a transaction; answered once synced, or at once with ``durable=False``.

        ``on_committed(result)`` runs on the writer thread after the commit, before the sync.
        """
        future: Future[T] = Future()
        self._jobs.put((fn, future, durable, on_committed))
        self._outstanding += 1
        try:
            return await asyncio.wrap_future(future)
        finally:
            self._outstanding -= 1

    def synced(self) -> asyncio.Future[Any]:
        """Done once every commit made before this call is durable (StoreUnavailable if not).

        The sync starts at the call, not when the result is awaited: the caller can do other work
        (tell the dispatcher) while the disk syncs.
        """
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()  # answered by the sync thread, never cancelled
        self._syncs.put([(future, None)])
        return asyncio.wrap_future(future)

    @property
    def busy(self) -> bool:
        """Something handed in is not answered yet (a caller that gave up no longer counts)."""
        return self._outstanding > 0

    def _run(self) -> None:
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            self._ready.set_exception(StoreUnavailable(f"cannot open the store: {exc}"))
            return
        # BUSY at once instead of SQLite's own waits: see _begin
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable jobs are synced after the commit
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
        self._answer(batch, results)

    def _commit_alone(self, conn: sqlite3.Connection, job: Job) -> None:
        try:
            results = self._transaction(conn, [job])
        except _JobFailed as failed:
            job[1].set_exception(_wrap(failed.cause))
        except sqlite3.Error as exc:
            self._fail([job], exc)
        else:
            self._answer([job], results)

    def _answer(self, batch: list[Job], results: list[Any]) -> None:
        """Committed: hooks run and leases answered; the durable jobs go to the sync thread."""
        durable: list[tuple[Future[Any], Any]] = []
        for (_, future, must_last, on_committed), result in zip(batch, results, strict=True):
            if on_committed is not None:
                try:
                    on_committed(result)
                except Exception:  # a hook's bug must not cost the commit its answer
                    log.exception("store commit hook failed")
            if must_last:
                durable.append((future, result))
            else:
                future.set_result(result)
        if durable:
            self._syncs.put(durable)

    def _sync_loop(self) -> None:
        """Take everything committed so far, sync once, answer it all; until told to stop."""
        while (first := self._syncs.get()) is not None:
            waiting, last = list(first), False
            while True:
                try:
                    more = self._syncs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    last = True
                    break
                waiting.extend(more)
            self._sync_and_answer(waiting)
            if last:
                return

    def _sync_and_answer(self, waiting: list[tuple[Future[Any], Any]]) -> None:
        try:
            self._sync()
        except OSError as exc:
            log.error("store commit could not be made durable: %s", exc)
            for future, _ in waiting:
                future.set_exception(StoreUnavailable(f"the store could not sync its log: {exc}"))
            return
        for future, result in waiting:
            future.set_result(result)

    def _transaction(self, conn: sqlite3.Connection, batch: list[Job]) -> list[Any]:
        self._begin(conn)
        try:
            results = []
            for fn, _, _, _ in batch:
                try:
                    results.append(_finished(fn(conn)))
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
                if exc.sqlite_errorcode == sqlite3.SQLITE_BUSY_SNAPSHOT:  # no waiting ends it: _finished
                    log.error("the store's writer holds a statement open past its commit: %s", exc)
                    raise
                now = time.monotonic()
                deadline = deadline or now + self._busy_timeout_s
                if now >= deadline:
                    raise
            time.sleep(self._retry_s)

    @staticmethod
    def _fail(batch: list[Job], exc: sqlite3.Error) -> None:
        log.error("store commit failed: %s", exc)
        for _, future, _, _ in batch:
            future.set_exception(_wrap(exc))


def _finished(result: T) -> T:
    """A job's result, with a cursor it returns closed.

    A statement that still has rows to give (a ``PRAGMA`` or ``SELECT`` whose cursor is returned,
    never read to the end) keeps this connection's snapshot open past the COMMIT; once another
    connection commits, every ``BEGIN IMMEDIATE`` here then fails with SQLITE_BUSY_SNAPSHOT, which
    no waiting cures, until the cursor happens to be collected. A job wanting rows returns them.
    """
    if isinstance(result, sqlite3.Cursor):
        result.close()
    return result


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
