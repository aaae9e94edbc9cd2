"""The shared store: PostgreSQL, for several daemons working from one outbox.

Every node accepts and delivers. Claims take rows ``FOR UPDATE SKIP LOCKED`` with a lease kept on
the database's clock; a claim whose lease ran out (its node presumed dead) is taken over by the
next claim, so a delivery sent just before its node died may be sent again (at least once; the
notification id is the receivers' idempotency key). New work is announced with LISTEN/NOTIFY on
a connection of its own; a notification sent while nobody listens is lost, so the dispatcher's
poll stays as a backstop. psycopg 3, async, with a pool (https://www.psycopg.org/psycopg3/docs/).

The pool and the transactions are in :mod:`daemon.store.postgres_pool`, the batching of accepts
in :mod:`daemon.store.postgres_accepts`; the reads are inherited from
:mod:`daemon.store.postgres_reads`, the work announced between nodes and the leader's lease from
:mod:`daemon.store.postgres_cluster`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

import psycopg
from psycopg import AsyncConnection

from daemon.core.model import CheckResult, Mode, Plan
from daemon.store import (
    migrations,
    postgres_ack,
    postgres_callbacks,
    postgres_claims,
    postgres_prune,
    postgres_reroutes,
    unreadable,
)
from daemon.store.base import OnVisible, StoreUnavailable
from daemon.store.postgres_accepts import Accepts
from daemon.store.postgres_cluster import PostgresCluster
from daemon.store.postgres_config import PostgresStoreConfig as PostgresStoreConfig
from daemon.store.postgres_listen import WorkListener
from daemon.store.postgres_pool import connect_args, create_pool, run_transaction
from daemon.store.postgres_provider import Fence
from daemon.store.postgres_queries import Conn, Q
from daemon.store.values import Accepted, AckResult, Callback, CancelResult, Claimed, NewNotification, Outcome

T = TypeVar("T")

#: check results older than this are pruned (the status page shows a day)
CHECK_RETENTION = timedelta(days=2)
#: the least time a pool connection may sit idle inside a transaction before the server ends its
#: session: a short lease must not cut off a healthy node whose event loop is merely slow for a moment
IDLE_IN_TRANSACTION_FLOOR_S = 5.0


class PostgresStore(PostgresCluster):
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
        idle_in_tx_s = max(leader_lease_s, IDLE_IN_TRANSACTION_FLOOR_S)
        self._pool = create_pool(
            url, self.node, size=pool_size, timeout_s=connect_timeout_s, idle_in_tx_s=idle_in_tx_s
        )
        self._accepts = Accepts(self._transaction, self.node)
        #: set by leadership: provider writes then carry the leader's token, or fail without one
        self._fenced = False
        self._fence: Fence | None = None
        listen_args = connect_args("backchannel listen", self.node, connect_timeout_s)
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
                self._url, **connect_args("backchannel migrate", self.node, self._timeout_s)
            ) as conn:
                return await migrations.apply_postgres(conn)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot migrate the PostgreSQL store: {exc}") from exc

    async def close(self) -> None:
        await self._accepts.drain()
        await self._listener.stop()
        await self._pool.close()

    # -- writes -----------------------------------------------------------------------------------

    async def _transaction(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``fn`` in one transaction; a failed commit (or lost connection) is StoreUnavailable."""
        return await run_transaction(self._pool, fn)

    async def accept(
        self,
        items: Sequence[NewNotification],
        now: datetime,
        *,
        on_visible: OnVisible | None = None,
    ) -> list[Accepted]:
        """Commit durably; concurrent calls from the event loop share one transaction (postgres_accepts).

        ``on_visible`` is not called: visible and durable are one moment here (the acceptor
        calls it after this returns).
        """
        return await self._accepts.accept(items, now)

    async def claim(self, channel: str, limit: int, now: datetime, lease_until: datetime) -> list[Claimed]:
        """Claim due deliveries and expired leases; the lease lasts ``lease_until - now`` on the DB clock."""
        read = await self._transaction(
            lambda conn: postgres_claims.claim(conn, channel, limit, now, lease_until, self.node)
        )
        claimed, found = postgres_claims.claimed(read)
        if found:
            await unreadable.put_back(self._put_back, found, now)
        return claimed

    async def _put_back(self, found: Sequence[tuple[int, str]], now: datetime) -> None:
        fixed = {"retry_at": now + unreadable.RETRY, "now": now, "node": self.node}

        async def put_back(conn: Conn) -> None:
            for delivery_id, detail in sorted(found):
                await conn.execute(Q["put_back_unreadable"], {"id": delivery_id, "detail": detail, **fixed})

        await self._transaction(put_back)

    async def record(self, outcomes: Sequence[Outcome], now: datetime) -> None:
        await self._transaction(lambda conn: postgres_claims.record(conn, outcomes, now, self.node))

    async def fail_stranded(
        self, channel: str, before: datetime, limit: int, detail: str, now: datetime
    ) -> int:
        return await self._transaction(
            lambda conn: postgres_claims.fail_stranded(conn, channel, before, limit, detail, now, self.node)
        )

    async def mark_digest(self, delivery_ids: Sequence[int], digest_id: str) -> None:
        params = {"ids": list(delivery_ids), "digest": digest_id}

        async def mark(conn: Conn) -> None:
            await conn.execute(Q["mark_digest"], params)

        await self._transaction(mark)

    async def renew(self, delivery_ids: Sequence[int], now: datetime, lease_until: datetime) -> set[int]:
        """The new lease runs on the database's clock, as a claim's."""
        params = {"ids": list(delivery_ids), "now": now, "lease": lease_until - now, "node": self.node}

        async def renew(conn: Conn) -> set[int]:
            rows = await (await conn.execute(Q["renew"], params)).fetchall()
            return {row["id"] for row in rows}

        return await self._transaction(renew)

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
            lambda conn: postgres_reroutes.reroute(conn, mode, plans, now, self.node, force=force)
        )

    async def repin(self, mode: Mode, now: datetime, limit: int) -> int:
        return await self._transaction(
            lambda conn: postgres_reroutes.repin(conn, mode, now, limit, self.node)
        )

    async def record_callback(self, callback: Callback) -> bool:
        return await self._transaction(
            lambda conn: postgres_callbacks.record_callback(conn, callback, self.node)
        )

    async def owe_replan(self, routes: str, now: datetime) -> None:
        async def owe(conn: Conn) -> None:
            await conn.execute(Q["owe_replan"], (routes, now))
            await conn.execute(Q["plan_routes"], (routes,))

        await self._transaction(owe)

    async def plan_routes(self, routes: str) -> None:
        async def plan(conn: Conn) -> None:
            await conn.execute(Q["plan_routes"], (routes,))

        await self._transaction(plan)

    async def settle_replans(self, routes: Collection[str]) -> None:
        async def settle(conn: Conn) -> None:
            await conn.execute(Q["settle_replans"], (sorted(routes),))

        await self._transaction(settle)

    async def prune(self, before: datetime, limit: int) -> int:
        return await self._transaction(lambda conn: postgres_prune.prune(conn, before, limit))

    async def cancel(self, notification_id: str, now: datetime) -> CancelResult:
        return await self._transaction(lambda conn: postgres_reroutes.cancel(conn, notification_id, now))

    async def acknowledge(self, notification_id: str, by: str, via: str, now: datetime) -> AckResult:
        return await self._transaction(
            lambda conn: postgres_ack.acknowledge(conn, notification_id, by, via, now)
        )

    async def probe(self, *, commit: bool) -> None:
        """A read round trip, or a transaction committed durably without a row written."""

        async def run(conn: Conn) -> None:
            await conn.execute(Q["probe_commit" if commit else "probe_read"])

        await (self._transaction(run) if commit else self._read(run))

    async def record_check(self, result: CheckResult) -> None:
        """Stored with this node's name: every node is a vantage point."""

        async def write(conn: Conn) -> None:
            await conn.execute(
                Q["insert_check"],
                (result.check, result.status.value, result.reason, result.latency_s, result.at, self.node),
            )
            await conn.execute(Q["prune_checks"], (result.at - CHECK_RETENTION,))

        await self._transaction(write)
