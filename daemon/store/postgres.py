"""The shared store: PostgreSQL, for several daemons working from one outbox.

Every node accepts and delivers. Claims take rows ``FOR UPDATE SKIP LOCKED`` with a lease kept on
the database's clock; a claim whose lease ran out (its node presumed dead) is taken over by the
next claim, so a delivery sent just before its node died may be sent again (at least once; the
notification id is the receivers' idempotency key). New work is announced with LISTEN/NOTIFY on
a connection of its own; a notification sent while nobody listens is lost, so the dispatcher's
poll stays as a backstop. psycopg 3, async, with a pool (https://www.psycopg.org/psycopg3/docs/).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.rows import DictRow, dict_row
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool

from daemon.core.health import HealthSnapshot, Transition
from daemon.core.model import CheckResult, Mode, Notification, Plan, normalise_ack_code
from daemon.store import migrations, postgres_ack, postgres_callbacks
from daemon.store import postgres_tx as tx
from daemon.store import postgres_views as views
from daemon.store.base import (
    Accepted,
    AckResult,
    Callback,
    CancelResult,
    ChannelHealth,
    Claimed,
    ListFilter,
    NewNotification,
    NotificationView,
    OnVisible,
    Outcome,
    ProviderView,
    QueueView,
    StoreUnavailable,
)
from daemon.store.postgres_config import PostgresStoreConfig as PostgresStoreConfig
from daemon.store.postgres_listen import WorkListener
from daemon.store.postgres_tx import Conn, Fence, NotLeader, Q
from daemon.store.postgres_views import LeaderView, NodeView

T = TypeVar("T")
log = logging.getLogger(__name__)

#: check results older than this are pruned (the status page shows a day)
CHECK_RETENTION = timedelta(days=2)
#: a transaction PostgreSQL aborted as a deadlock or serialization failure is run again this often
TX_ATTEMPTS = 3
#: the least time a pool connection may sit idle inside a transaction before the server ends its
#: session: a short lease must not cut off a healthy node whose event loop is merely slow for a moment
IDLE_IN_TRANSACTION_FLOOR_S = 5.0
_Call = tuple[Sequence[NewNotification], datetime, "asyncio.Future[list[Accepted]]"]


class PostgresStore:
    def __init__(
        self,
        url: str,
        *,
        node: str | None = None,
        pool_size: int = 10,
        connect_timeout_s: float = 5.0,
        reconnect_s: float = 1.0,
        leader_lease_s: float = 6.0,
    ) -> None:
        self._url = url
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"
        self._timeout_s = connect_timeout_s
        # A node paused (SIGSTOP, GC) inside a transaction keeps its row locks, the lease row's
        # among them, so no other node could take the lead over; the server ends such a session.
        self._idle_in_tx_s = max(leader_lease_s, IDLE_IN_TRANSACTION_FLOOR_S)
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=connect_timeout_s,
            connection_class=AsyncConnection[DictRow],
            kwargs=self._connect_args("backchannel"),
            configure=self._configure,
            # a connection the server dropped (restart, failover) is replaced before use
            check=AsyncConnectionPool.check_connection,
        )
        self._accepts: list[_Call] = []
        #: set by leadership: provider writes then carry the leader's token, or fail without one
        self._fenced = False
        self._fence: Fence | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        listen_args = self._connect_args("backchannel listen")
        self._listener = WorkListener(url, listen_args, self.node, reconnect_s)

    @classmethod
    def from_config(cls, config: PostgresStoreConfig) -> PostgresStore:
        return cls(
            config.url.get_secret_value(),
            node=config.node,
            pool_size=config.pool_size,
            connect_timeout_s=config.connect_timeout.total_seconds(),
            leader_lease_s=config.leader_lease.total_seconds(),
        )

    def _connect_args(self, role: str) -> dict[str, Any]:
        # libpq's connect_timeout is whole seconds; the name shows in pg_stat_activity
        return {
            "autocommit": True,
            "row_factory": dict_row,
            "application_name": f"{role} {self.node}",
            "connect_timeout": max(1, round(self._timeout_s)),
        }

    async def _configure(self, conn: Conn) -> None:
        # jsonb comes back as its text: the codec shared with SQLite parses JSON itself
        conn.adapters.register_loader("jsonb", TextLoader)
        await conn.execute(Q["idle_in_transaction_timeout"], (_ms(self._idle_in_tx_s),))

    async def open(self) -> None:
        """Connect, apply missing migrations, start listening for work announced by other nodes."""
        try:
            await self._pool.open(wait=True, timeout=self._timeout_s)
            async with self._pool.connection() as conn:
                await migrations.apply_postgres(conn)
        except BaseException as exc:
            await self._pool.close()
            if isinstance(exc, psycopg.Error):
                raise StoreUnavailable(f"cannot open the PostgreSQL store: {exc}") from exc
            raise
        try:
            await self._listener.start(self._timeout_s)
        except TimeoutError:
            await self._pool.close()
            raise StoreUnavailable("cannot LISTEN for new work on the PostgreSQL store") from None

    async def migrate(self) -> list[int]:
        """``backchannel migrate``: apply what is missing without opening the store."""
        try:
            async with await AsyncConnection.connect(
                self._url, **self._connect_args("backchannel migrate")
            ) as conn:
                return await migrations.apply_postgres(conn)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot migrate the PostgreSQL store: {exc}") from exc

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        await self._listener.stop()
        await self._pool.close()

    # -- new work from other nodes ----------------------------------------------------------------

    def on_work(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (in the event loop) when another node announces work, or when the
        LISTEN connection comes back after a loss (announcements made meanwhile are gone)."""
        self._listener.on_work(listener)

    @property
    def listening(self) -> bool:
        """Whether announcements from other nodes reach this one now (for status and tests)."""
        return self._listener.listening.is_set()

    async def wait_for_work(self, timeout_s: float) -> bool:
        """Wait until another node announces work; False when ``timeout_s`` passed first."""
        return await self._listener.wait_for_work(timeout_s)

    # -- writes -----------------------------------------------------------------------------------

    async def _transaction(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn`` in one transaction; a failed commit (or lost connection) is StoreUnavailable."""
        for attempt in range(1, TX_ATTEMPTS + 1):
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    return await fn(conn)
            except (errors.DeadlockDetected, errors.SerializationFailure) as exc:
                if attempt == TX_ATTEMPTS:
                    raise StoreUnavailable(f"the store could not commit: {exc}") from exc
                log.info("store transaction retried: %s", exc, extra={"event": "store.retry"})
            except errors.LockNotAvailable as exc:  # a lock_timeout ran out: the caller tries later
                raise StoreUnavailable(f"the store is busy: {exc}") from exc
            except psycopg.Error as exc:
                log.error("store commit failed: %s", exc, extra={"event": "store.commit_failed"})
                raise StoreUnavailable(f"the store could not commit: {exc}") from exc
        raise AssertionError("the last attempt returns or raises")

    async def accept(
        self,
        items: Sequence[NewNotification],
        now: datetime,
        *,
        on_visible: OnVisible | None = None,
    ) -> list[Accepted]:
        """Commit durably; concurrent calls from the event loop share one transaction.

        ``on_visible`` is not called: visible and durable are one moment here (the acceptor
        calls it after this returns).
        """
        future: asyncio.Future[list[Accepted]] = asyncio.get_running_loop().create_future()
        self._accepts.append((items, now, future))
        if len(self._accepts) == 1:
            flush = asyncio.create_task(self._flush_accepts())
            self._tasks.add(flush)
            flush.add_done_callback(self._tasks.discard)
        return await future

    async def _flush_accepts(self) -> None:
        batch = [call for call in self._accepts if not call[2].done()]  # a cancelled caller gave up
        self._accepts = []
        if not batch:
            return
        try:
            results = await self._transaction(lambda conn: tx.accept(conn, [c[:2] for c in batch], self.node))
        except StoreUnavailable as exc:  # nothing was committed: every caller gets the failure
            _settle(batch, exc)
            return
        except Exception as exc:  # one caller's bad input must not fail the others: each alone
            if len(batch) == 1:
                _settle(batch, exc)
            else:
                await asyncio.gather(*(self._accept_alone(call) for call in batch))
            return
        for (_, _, future), accepted in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(accepted)

    async def _accept_alone(self, call: _Call) -> None:
        items, now, future = call
        try:
            (accepted,) = await self._transaction(lambda conn: tx.accept(conn, [(items, now)], self.node))
        except Exception as exc:
            _settle([call], exc)
        else:
            if not future.done():
                future.set_result(accepted)

    async def claim(self, channel: str, limit: int, now: datetime, lease_until: datetime) -> list[Claimed]:
        """Claim due deliveries and expired leases; the lease lasts ``lease_until - now`` on the DB clock."""
        return await self._transaction(
            lambda conn: tx.claim(conn, channel, limit, now, lease_until, self.node)
        )

    async def record(self, outcomes: Sequence[Outcome], now: datetime) -> None:
        await self._transaction(lambda conn: tx.record(conn, outcomes, now, self.node))

    async def release_expired(self, now: datetime) -> int:
        """Make pending again (or superseded, once acknowledged) the claims whose lease ran out."""

        async def release(conn: Conn) -> int:
            cur = await conn.execute(Q["release_expired"], {"now": now})
            return cur.rowcount

        return await self._transaction(release)

    async def release_claims(self, now: datetime) -> int:
        """Make pending again the claims whose lease ran out and this node's own from a past run."""

        async def release(conn: Conn) -> int:
            cur = await conn.execute(Q["release_claims"], {"now": now, "node": self.node})
            return cur.rowcount

        return await self._transaction(release)

    async def reroute(
        self, mode: Mode, plans: Mapping[str, Plan], now: datetime, *, force: bool = False
    ) -> int:
        return await self._transaction(
            lambda conn: tx.reroute(conn, mode, plans, now, self.node, force=force)
        )

    async def record_callback(self, callback: Callback) -> bool:
        return await self._transaction(
            lambda conn: postgres_callbacks.record_callback(conn, callback, self.node)
        )

    async def save_provider(
        self, snapshot: HealthSnapshot, transition: Transition | None, now: datetime
    ) -> None:
        """Unfenced until leadership is on; then only with the current token, else NotLeader."""
        fence = self._fence
        if not self._fenced:
            await self._transaction(lambda conn: tx.save_provider(conn, snapshot, transition, now))
        elif fence is None:
            raise NotLeader(f"node {self.node} is not the leader: it does not decide the provider state")
        else:
            await self._transaction(
                lambda conn: tx.save_provider_fenced(conn, snapshot, transition, now, fence)
            )

    # -- leadership (daemon.leadership drives these) ----------------------------------------------

    def fence(self, version: int | None) -> None:
        """Provider writes from now on carry this token (None: this node is not the leader)."""
        self._fenced = True
        self._fence = None if version is None else Fence(self.node, version)

    async def acquire_leadership(self, lease_s: float, version: int | None) -> int | None:
        """Renew (holding ``version``) or take an expired lease; the token held now, or None.

        StoreUnavailable when the lease row stays locked for a third of the lease (a paused node
        mid-write holds it): the next round tries again rather than this one waiting for good.
        """

        async def acquire(conn: Conn) -> int | None:
            await conn.execute(Q["lock_timeout"], (_ms(lease_s / 3),))
            params = {"node": self.node, "version": version, "lease": timedelta(seconds=lease_s)}
            row = await (await conn.execute(Q["acquire_leader"], params)).fetchone()
            return None if row is None else int(row["version"])

        return await self._transaction(acquire)

    async def resign_leadership(self, version: int) -> None:
        async def resign(conn: Conn) -> None:
            await conn.execute(Q["resign_leader"], {"node": self.node, "version": version})

        await self._transaction(resign)

    async def leader(self) -> LeaderView:
        return await self._read(views.leader)

    async def nodes(self, since: datetime) -> list[NodeView]:
        """Each node, its role and its latest result per check since ``since`` (for status)."""
        return await self._read(lambda conn: views.nodes(conn, since))

    async def record_check(self, result: CheckResult) -> None:
        """Stored with this node's name: every node is a vantage point."""

        async def write(conn: Conn) -> None:
            await conn.execute(
                Q["insert_check"],
                (result.check, result.status.value, result.reason, result.latency_s, result.at, self.node),
            )
            await conn.execute(Q["prune_checks"], (result.at - CHECK_RETENTION,))

        await self._transaction(write)

    # -- reads ------------------------------------------------------------------------------------

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        try:
            async with self._pool.connection() as conn:
                return await fn(conn)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"the store could not be read: {exc}") from exc

    async def due(self) -> dict[str, datetime]:
        """Per channel, when its earliest pending delivery (of the mode in force) is due."""
        return await self._read(views.due)

    async def acknowledged(self, notification_ids: Sequence[str]) -> set[str]:
        return await self._read(lambda conn: views.acknowledged(conn, notification_ids))

    async def reroute_candidates(self, mode: Mode, limit: int) -> list[Notification]:
        return await self._read(lambda conn: views.reroute_candidates(conn, mode, limit))

    async def unsent(self, after_id: str, limit: int) -> list[tuple[Notification, Plan]]:
        return await self._read(lambda conn: views.unsent(conn, after_id, limit))

    async def provider(self, events: int = 20, checks: int = 20) -> ProviderView:
        return await self._read(lambda conn: views.provider(conn, events, checks))

    async def history(self, since: datetime) -> tuple[list[Transition], list[CheckResult]]:
        """Transitions and check results since ``since``, oldest first (the status page's timeline)."""
        return await self._read(lambda conn: views.history(conn, since))

    async def queue(self) -> QueueView:
        return await self._read(views.queue)

    async def thread_of(self, idempotency_key: str, channel: str) -> str | None:
        """The channel's id for the delivered message of the notification with that key (threads)."""

        async def read(conn: Conn) -> str | None:
            row = await (await conn.execute(Q["thread_of"], (idempotency_key, channel))).fetchone()
            return None if row is None else str(row["remote_id"])

        return await self._read(read)

    async def channel_health(self) -> list[ChannelHealth]:
        return await self._read(views.channel_health)

    async def latest_drill(self) -> str | None:
        return await self._read(views.latest_drill)

    async def recent(self, limit: int) -> list[NotificationView]:
        """The newest notifications with their delivery trails."""
        return await self._read(lambda conn: views.notifications(conn, "recent_notification_ids", limit))

    async def search(self, query: ListFilter) -> list[NotificationView]:
        """Newest first; ``query.before`` is the cursor of the next page."""
        params = {
            "status": query.status,
            "severity": query.severity,
            "since": query.since,
            "before": query.before,
            "limit": query.limit,
        }

        async def read(conn: Conn) -> list[NotificationView]:
            found = await (await conn.execute(Q["list_ids"], params)).fetchall()
            listed = [await views.notification(conn, row["id"]) for row in found]
            return [v for v in listed if v is not None]

        return await self._read(read)

    async def cancel(self, notification_id: str, now: datetime) -> CancelResult:
        return await self._transaction(lambda conn: tx.cancel(conn, notification_id, now))

    async def acknowledge(self, notification_id: str, by: str, via: str, now: datetime) -> AckResult:
        return await self._transaction(
            lambda conn: postgres_ack.acknowledge(conn, notification_id, by, via, now)
        )

    async def by_ack_code(self, code: str) -> str | None:
        async def read(conn: Conn) -> str | None:
            row = await (await conn.execute(Q["by_ack_code"], (normalise_ack_code(code),))).fetchone()
            return None if row is None else str(row["id"])

        return await self._read(read)

    async def drill(self, drill_id: str) -> list[NotificationView]:
        """The notifications a drill sent, one per channel."""
        return await self._read(lambda conn: views.notifications(conn, "drill_ids", drill_id))

    async def notification(self, notification_id: str) -> NotificationView | None:
        return await self._read(lambda conn: views.notification(conn, notification_id))


def _ms(seconds: float) -> str:
    """A duration setting's value in whole milliseconds; at least 1, as 0 means no limit at all."""
    return f"{max(1, round(seconds * 1000))}ms"


def _settle(calls: Sequence[_Call], exc: BaseException) -> None:
    for _, _, future in calls:
        if not future.done():
            future.set_exception(exc)
