"""The embedded store: SQLite in WAL mode, every acknowledged write synced to disk.

Durable as ``synchronous=FULL``: with simulated power loss, plain NORMAL lost hundreds of
acknowledged commits on this project's test machine and FULL none. Commits are NORMAL and a
durable write is answered only after an ``fdatasync`` of the WAL (:mod:`daemon.store.walsync`),
which happens after the write lock is released. Writes go through one :class:`GroupCommitWriter`
thread (a lone accept on the event loop's own connection); reads use their own connection on
their own thread (WAL lets them run beside the writer).

The batching of accepts is in :mod:`daemon.store.sqlite_accepts`; the reads are inherited from
:mod:`daemon.store.sqlite_reads`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

from daemon.core.health import HealthSnapshot, Transition
from daemon.core.model import CheckResult, Mode, Plan
from daemon.store import (
    codec,
    migrations,
    sqlite_ack,
    sqlite_callbacks,
    sqlite_claims,
    sqlite_provider,
    sqlite_prune,
    sqlite_reroutes,
    unreadable,
)
from daemon.store.base import OnVisible, StoreUnavailable
from daemon.store.queries import load
from daemon.store.sqlite_accepts import Accepts
from daemon.store.sqlite_inline import InlineConnection, Missed
from daemon.store.sqlite_reads import SqliteReads
from daemon.store.values import Accepted, AckResult, Callback, CancelResult, Claimed, NewNotification, Outcome
from daemon.store.walsync import WalSync
from daemon.store.writer import RETRY_S, GroupCommitWriter

Q = load("sqlite")
log = logging.getLogger(__name__)
#: check results older than this are pruned (the status page shows a day)
CHECK_RETENTION = timedelta(days=2)


class SqliteStore(SqliteReads):
    def __init__(
        self, path: Path, *, busy_timeout_s: float = 5.0, write_retry_s: float = RETRY_S, inline: bool = True
    ) -> None:
        """``write_retry_s``: how often to try for the write lock another process holds (intake
        workers wait longer than the daemon, so its claims and outcomes go first). ``inline``:
        open the event loop's own connection (the dispatcher's due and claim, lone accepts)."""
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._wal = WalSync(path)
        self._writer = GroupCommitWriter(
            self._connect, sync=self._wal.sync, busy_timeout_s=busy_timeout_s, retry_s=write_retry_s
        )
        self._reader: ThreadPoolExecutor | None = None
        self._read_conn: sqlite3.Connection | None = None
        #: the dispatcher's due/claim on the event loop's thread when that needs no waiting
        self._inline = InlineConnection(self._connect)
        self._inline_enabled = inline
        self._accepts = Accepts(self._writer, self._inline)
        self._records: list[tuple[Sequence[Outcome], datetime, asyncio.Future[None]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # a network file system, say: durability relies on the WAL
            conn.close()
            raise sqlite3.OperationalError(f"the store needs WAL mode, and {self.path} is in {mode} mode")
        # FULL for the migrations' connection; the writer's and the loop's commit NORMAL and
        # have the WAL synced after (walsync)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    async def open(self) -> None:
        try:
            migrations.create_private(self.path)
            await asyncio.to_thread(self._migrate)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        self._writer.start()
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-reader")
        self._read_conn = await self._read_thread(lambda: self._connect())
        try:
            if self._inline_enabled:
                await asyncio.to_thread(self._inline.open)  # opening may wait on another process's lock
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        conn = self._connect()
        try:
            migrations.apply(conn, "sqlite")
            _check_writable(conn)
        finally:
            conn.close()

    async def close(self) -> None:
        self._inline.close()
        await asyncio.to_thread(self._writer.stop)
        self._wal.close()
        if self._reader is not None:
            if self._read_conn is not None:
                await self._read_thread(self._read_conn.close)
            self._reader.shutdown(wait=True)

    # -- writes -----------------------------------------------------------------------------------

    async def accept(
        self,
        items: Sequence[NewNotification],
        now: datetime,
        *,
        on_visible: OnVisible | None = None,
    ) -> list[Accepted]:
        """Commit durably; concurrent calls share one transaction and one fsync (sqlite_accepts).

        ``on_visible`` runs on the event loop once the notifications are committed and visible to
        other connections, before the fsync that makes them durable (and before this returns).
        """
        return await self._accepts.accept(items, now, on_visible)

    async def claim(self, channel: str, limit: int, now: datetime, lease_until: datetime) -> list[Claimed]:
        # Not durable (no fsync of its own): a lease lost with power leaves the delivery pending,
        # so it is sent (again) after the restart, which at-least-once delivery allows. The
        # outcome recorded after the send is durable, and its fsync covers this claim too.
        def claim(conn: sqlite3.Connection) -> sqlite_claims.ClaimedRows:
            return sqlite_claims.claim(conn, channel, limit, now, lease_until)

        read = self._inline.write(claim)
        if isinstance(read, Missed):  # the write lock is taken: the writer thread waits its turn
            read = await self._writer.run(claim, durable=False)
        claimed, found = sqlite_claims.claimed(read)
        if found:
            await unreadable.put_back(self._put_back, found, now)
        return claimed

    async def _put_back(self, found: Sequence[tuple[int, str]], now: datetime) -> None:
        """Not durable: lost with power, the claim's lease runs out and the row is met again."""
        times = {"retry_at": codec.ts(now + unreadable.RETRY), "now": codec.ts(now)}

        def put_back(conn: sqlite3.Connection) -> None:
            for delivery_id, detail in found:
                conn.execute(Q["put_back_unreadable"], {"id": delivery_id, "detail": detail, **times})

        await self._writer.run(put_back, durable=False)

    async def record(self, outcomes: Sequence[Outcome], now: datetime) -> None:
        """Commit durably; outcomes recorded while a writer job is waiting join it (one hand-off).

        Sends finish a few at a time under load: each outcome its own writer job cost a thread
        hand-off each way per delivery, though the writer committed them together anyway.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._records.append((outcomes, now, future))
        if len(self._records) == 1:
            flush = asyncio.create_task(self._flush_records())
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        await future

    async def _flush_records(self) -> None:
        batch, self._records = self._records, []

        def write(conn: sqlite3.Connection) -> None:
            for outcomes, now, _ in batch:
                sqlite_claims.record(conn, outcomes, now)

        try:
            await self._writer.run(write)
        except StoreUnavailable as exc:  # nothing was committed: every caller retries
            _fail_all([future for _, _, future in batch], exc)
        except Exception:
            # One caller's bad outcome must not fail the others': each on its own, as if alone.
            for outcomes, now, future in batch:
                await self._record_alone(outcomes, now, future)
        except BaseException as exc:
            _fail_all([future for _, _, future in batch], exc)
            raise
        else:
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def _record_alone(
        self, outcomes: Sequence[Outcome], now: datetime, future: asyncio.Future[None]
    ) -> None:
        try:
            await self._writer.run(lambda conn: sqlite_claims.record(conn, outcomes, now))
        except Exception as exc:
            _fail_all([future], exc)
        else:
            if not future.done():
                future.set_result(None)

    async def fail_stranded(
        self, channel: str, before: datetime, limit: int, detail: str, now: datetime
    ) -> int:
        return await self._writer.run(
            lambda conn: sqlite_claims.fail_stranded(conn, channel, before, limit, detail, now)
        )

    async def mark_digest(self, delivery_ids: Sequence[int], digest_id: str) -> None:
        # Not durable, as the claims it marks: lost with power, the digest is grouped anew.
        params = {"ids": json.dumps(list(delivery_ids)), "digest": digest_id}
        await self._writer.run(lambda conn: conn.execute(Q["mark_digest"], params), durable=False)

    async def renew(self, delivery_ids: Sequence[int], now: datetime, lease_until: datetime) -> set[int]:
        # Not durable, as the claim it extends.
        params = {
            "ids": json.dumps(list(delivery_ids)),
            "now": codec.ts(now),
            "lease_until": codec.ts(lease_until),
        }

        def renew(conn: sqlite3.Connection) -> set[int]:
            return {row[0] for row in conn.execute(Q["renew"], params).fetchall()}

        return await self._writer.run(renew, durable=False)

    async def release_expired(self, now: datetime) -> int:
        return await self._writer.run(
            lambda conn: conn.execute(Q["release_expired"], {"now": codec.ts(now)}).rowcount
        )

    async def release_claims(self, now: datetime) -> int:
        return await self._writer.run(
            lambda conn: conn.execute(Q["release_claims"], (codec.ts(now),)).rowcount
        )

    async def record_callback(self, callback: Callback) -> bool:
        return await self._writer.run(lambda conn: sqlite_callbacks.record_callback(conn, callback))

    async def reroute(
        self, mode: Mode, plans: Mapping[str, Plan], now: datetime, *, force: bool = False
    ) -> int:
        return await self._writer.run(
            lambda conn: sqlite_reroutes.reroute(conn, mode, plans, now, force=force)
        )

    async def repin(self, mode: Mode, now: datetime, limit: int) -> int:
        # Read first: a mode change with nothing pinned to move costs no write and no sync.
        if not await self._read(lambda conn: conn.execute(Q["repin_candidates"], (mode, 1)).fetchall()):
            return 0
        return await self._writer.run(lambda conn: sqlite_reroutes.repin(conn, mode, now, limit))

    async def owe_replan(self, routes: str, now: datetime) -> None:
        def owe(conn: sqlite3.Connection) -> None:
            conn.execute(Q["owe_replan"], (routes, codec.ts(now)))
            conn.execute(Q["plan_routes"], (routes,))

        await self._writer.run(owe)

    async def plan_routes(self, routes: str) -> None:
        await self._writer.run(lambda conn: conn.execute(Q["plan_routes"], (routes,)))

    async def settle_replans(self, routes: Collection[str]) -> None:
        digests = json.dumps(sorted(routes))
        await self._writer.run(lambda conn: conn.execute(Q["settle_replans"], (digests,)))

    async def save_provider(
        self, snapshot: HealthSnapshot, transition: Transition | None, now: datetime
    ) -> None:
        await self._writer.run(lambda conn: sqlite_provider.save_provider(conn, snapshot, transition, now))

    async def record_check(self, result: CheckResult) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                Q["insert_check"],
                (result.check, result.status.value, result.reason, result.latency_s, codec.ts(result.at)),
            )
            conn.execute(Q["prune_checks"], (codec.ts(result.at - CHECK_RETENTION),))

        await self._writer.run(write)

    async def prune(self, before: datetime, limit: int) -> int:
        return await self._writer.run(lambda conn: sqlite_prune.prune(conn, before, limit))

    async def cancel(self, notification_id: str, now: datetime) -> CancelResult:
        return await self._writer.run(lambda conn: sqlite_reroutes.cancel(conn, notification_id, now))

    async def probe(self, *, commit: bool) -> None:
        """A read on the reader's connection, or a durable commit through the writer (one page
        rewritten, appended to the WAL and synced: what a small accept needs of the disk)."""
        if commit:
            await self._writer.run(lambda conn: conn.execute(Q["probe_commit"]))
        else:
            await self._read(lambda conn: conn.execute(Q["probe_read"]).fetchall())

    async def acknowledge(self, notification_id: str, by: str, via: str, now: datetime) -> AckResult:
        return await self._writer.run(
            lambda conn: sqlite_ack.acknowledge(conn, notification_id, by, via, now)
        )


def _check_writable(conn: sqlite3.Connection) -> None:
    """A write, rolled back: raises if SQLite opened the file read-only (its mode, a read-only mount).

    SQLite opens such a file without a word and reads it; with no migration to apply, the daemon
    then reported ready and answered every accept 503 (``attempt to write a readonly database``).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE provider SET id = id WHERE id = 1")
    finally:
        conn.rollback()


def _fail_all(futures: Sequence[asyncio.Future[None]], exc: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(exc)
