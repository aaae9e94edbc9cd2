"""The PostgreSQL store's connections: the pool, each connection set up for the store, and the
transaction every write runs in (one the server aborted as a deadlock or serialization failure is
run again; whatever else psycopg raises is StoreUnavailable).

psycopg_pool (https://www.psycopg.org/psycopg3/docs/advanced/pool.html).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.rows import DictRow, dict_row
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool

from daemon.store.base import StoreUnavailable
from daemon.store.postgres_queries import Conn, Q

T = TypeVar("T")
log = logging.getLogger("daemon.store.postgres")  # the store logs under one name

#: a transaction PostgreSQL aborted as a deadlock or serialization failure is run again this often
TX_ATTEMPTS = 3


#: TCP keepalives and a user timeout (libpq's): a connection whose peer vanished without a word (a
#: failover that moved the address, a NAT or load balancer that dropped it while idle) errors
#: within about half a minute, where the kernel's defaults left callers waiting some fifteen
KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def connect_args(role: str, node: str, timeout_s: float) -> dict[str, Any]:
    # libpq's connect_timeout is whole seconds; the name shows in pg_stat_activity
    return {
        "autocommit": True,
        "row_factory": dict_row,
        "application_name": f"{role} {node}",
        "connect_timeout": max(1, round(timeout_s)),
        **KEEPALIVE,
    }


def create_pool(
    url: str, node: str, *, size: int, timeout_s: float, idle_in_tx_s: float
) -> AsyncConnectionPool[Conn]:
    """The store's pool, not yet open; the server ends a session idle in a transaction that long."""

    async def configure(conn: Conn) -> None:
        # jsonb comes back as its text: the codec shared with SQLite parses JSON itself
        conn.adapters.register_loader("jsonb", TextLoader)
        await conn.execute(Q["idle_in_transaction_timeout"], (ms(idle_in_tx_s),))
        # The claims' locking (FOR UPDATE SKIP LOCKED) is written for READ COMMITTED: under a
        # database or role whose default is SERIALIZABLE, nodes claiming at once failed each other.
        await conn.set_isolation_level(psycopg.IsolationLevel.READ_COMMITTED)

    return AsyncConnectionPool(
        url,
        min_size=1,
        max_size=size,
        open=False,
        timeout=timeout_s,
        connection_class=AsyncConnection[DictRow],
        kwargs=connect_args("backchannel", node, timeout_s),
        configure=configure,
        # The pool retries a lost connection with a doubling delay: after a minute's outage the
        # next try came up to half a minute after the server was back, callers meanwhile answered
        # 503. Given up after this long, a connection is made afresh as soon as a caller waits.
        reconnect_timeout=timeout_s,
        # a connection the server dropped (restart, failover) is replaced before use
        check=AsyncConnectionPool.check_connection,
    )


async def run_transaction(pool: AsyncConnectionPool[Conn], fn: Callable[[Conn], Awaitable[T]]) -> T:
    """Run ``fn`` in one transaction; a failed commit (or lost connection) is StoreUnavailable."""
    for attempt in range(1, TX_ATTEMPTS + 1):
        try:
            async with pool.connection() as conn, conn.transaction():
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


def ms(seconds: float) -> str:
    """A duration setting's value in whole milliseconds; at least 1, as 0 means no limit at all."""
    return f"{max(1, round(seconds * 1000))}ms"
