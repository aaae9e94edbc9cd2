"""Retention on PostgreSQL: as :mod:`daemon.store.sqlite_prune`, in one transaction per batch.

The candidates are locked ``FOR UPDATE SKIP LOCKED``: a row another transaction is changing (an
acknowledgement, a late callback's outcome) is left for the next run rather than waited for.
"""

from __future__ import annotations

from datetime import datetime

from daemon.store.postgres_queries import Conn, Q
from daemon.store.sqlite_prune import DELETES


async def prune(conn: Conn, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` finished notifications last changed before ``before``; how many."""
    rows = await (await conn.execute(Q["prunable"], {"before": before, "limit": limit})).fetchall()
    if not rows:
        return 0
    ids = [row["id"] for row in rows]
    for name in DELETES:
        await conn.execute(Q[name], (ids,))
    return len(rows)
