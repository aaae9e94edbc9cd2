"""What the PostgreSQL store's modules share: the connection type, the named queries, the channel new
work is announced on, and two helpers for the rows the queries return.

The writes (the modules ``postgres_accept_tx``, ``postgres_claims``, ``postgres_reroutes``,
``postgres_provider``, ``postgres_ack``, ``postgres_callbacks``) take the row locks several nodes
need: the mode is read ``FOR SHARE``; claims take rows ``FOR UPDATE SKIP LOCKED`` under a lease;
one lock order, so no deadlocks: the provider row (accept, record, reroute share it; save_provider
locks it), then a notification, then its deliveries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, LiteralString

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from daemon.store.queries import load

Conn = AsyncConnection[DictRow]

# The query files ship inside the package: they are code, never text from outside.
Q: dict[str, LiteralString] = load("postgres")

#: the LISTEN/NOTIFY channel announcing new work; the payload is the announcing node's name
WORK_CHANNEL = "backchannel_work"


def epochs(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with its timestamptz values as epoch seconds, the form :mod:`codec` reads."""
    return {k: v.timestamp() if isinstance(v, datetime) else v for k, v in row.items()}


async def _one(conn: Conn, query: LiteralString, params: Sequence[Any] | Mapping[str, Any]) -> DictRow | None:
    cur = await conn.execute(query, params)
    return await cur.fetchone()
