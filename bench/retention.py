"""How fast retention deletes a backlog, on SQLite and on PostgreSQL.

Fills a fresh store with ``--count`` delivered notifications (each with its delivery and one
attempt, 200 bytes of body) created a year ago, then times ``Store.prune`` in batches of 500 as
the daemon's retention runs it (daemon/retention.py): the whole backlog, and the median and
worst batch, which is how long one transaction holds the writer (SQLite) or its rows (PostgreSQL).

    .venv/bin/python bench/retention.py [--count 100000] [--stores sqlite postgres]

PostgreSQL: the server on 127.0.0.1:5432 (BACKCHANNEL_TEST_POSTGRES_URL to use another); the
benchmark works in a schema of its own and drops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.core.model import Mode, Notification, Plan, Severity
from daemon.retention import BATCH
from daemon.store.base import Store
from daemon.store.values import NewNotification, Outcome

YEAR_AGO = datetime.now(UTC) - timedelta(days=365)
FILL = 500
PG_URL = os.environ.get("BACKCHANNEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _items(start: int, n: int) -> list[NewNotification]:
    plans: dict[Mode, Plan] = {m: Plan(route="r", mode=m, steps=("email",)) for m in ("healthy", "outage")}
    return [
        NewNotification(
            Notification(f"bench-{i:09d}", f"k-{i}", YEAR_AGO, Severity.INFO, f"subject {i}", "x" * 200),
            plans,
        )
        for i in range(start, start + n)
    ]


async def _fill(store: Store, count: int) -> float:
    began = time.perf_counter()
    lease = YEAR_AGO + timedelta(minutes=5)
    for start in range(0, count, FILL):
        await store.accept(_items(start, min(FILL, count - start)), YEAR_AGO)
        claimed = await store.claim("email", FILL, YEAR_AGO, lease)
        done = [Outcome(c.delivery.id, "delivered", YEAR_AGO, YEAR_AGO, "250 ok") for c in claimed]
        await store.record(done, YEAR_AGO)
    return time.perf_counter() - began


async def _prune(store: Store) -> tuple[int, float, list[float]]:
    before = datetime.now(UTC) - timedelta(days=30)
    total, batches = 0, []
    began = time.perf_counter()
    while True:
        t = time.perf_counter()
        deleted = await store.prune(before, BATCH)
        batches.append(time.perf_counter() - t)
        total += deleted
        if deleted < BATCH:
            return total, time.perf_counter() - began, batches


@asynccontextmanager
async def _sqlite() -> AsyncIterator[Store]:
    from daemon.store.sqlite import SqliteStore

    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "outbox.db")
        await store.open()
        try:
            yield store
        finally:
            await store.close()


@asynccontextmanager
async def _postgres() -> AsyncIterator[Store]:
    import psycopg

    from daemon.store.postgres import PostgresStore

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            store = PostgresStore(f"{PG_URL}?options=-csearch_path%3D{schema}")
            await store.open()
            try:
                yield store
            finally:
                await store.close()
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


STORES: dict[str, Callable[[], AbstractAsyncContextManager[Store]]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}


async def run(kind: str, count: int) -> None:
    async with STORES[kind]() as store:
        filled = await _fill(store, count)
        total, took, batches = await _prune(store)
        ms = sorted(b * 1000 for b in batches)
        print(
            f"{kind:8}  {total:,} deleted in {took:.1f} s ({total / took:,.0f}/s; filled in {filled:.0f} s); "
            f"batch of {BATCH}: median {statistics.median(ms):.1f} ms, worst {ms[-1]:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--stores", nargs="+", choices=sorted(STORES), default=["sqlite", "postgres"])
    args = parser.parse_args()
    for kind in args.stores:
        asyncio.run(run(kind, args.count))


if __name__ == "__main__":
    main()
