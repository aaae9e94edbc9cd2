"""The SQLite store's reads: on the reader thread's connection, or, for the dispatcher's quick ones
(due, acknowledged), on the event loop's own connection when that needs no waiting
(:mod:`daemon.store.sqlite_inline`).

:class:`~daemon.store.sqlite.SqliteStore` inherits them; the queries that build views are in
:mod:`daemon.store.sqlite_views`.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TypeVar

from daemon.core.health import Transition
from daemon.core.model import CheckResult, Mode, Notification, Plan, normalise_ack_code, other_mode
from daemon.store import codec, unreadable
from daemon.store import sqlite_views as views
from daemon.store.base import StoreUnavailable
from daemon.store.queries import load
from daemon.store.sqlite_inline import InlineConnection, Missed
from daemon.store.values import ChannelHealth, ListFilter, NotificationView, ProviderView, QueueView

T = TypeVar("T")
Q = load("sqlite")


class SqliteReads:
    _reader: ThreadPoolExecutor | None
    _read_conn: sqlite3.Connection | None
    _inline: InlineConnection

    async def _read_thread(self, fn: Callable[[], T]) -> T:
        assert self._reader is not None, "store not open"
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            assert self._read_conn is not None
            return fn(self._read_conn)

        try:
            return await self._read_thread(run)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the store could not be read: {exc}") from exc

    async def unsent(self, after_id: str, limit: int) -> list[tuple[Notification, Plan]]:
        async def read(n: int) -> tuple[list[tuple[Notification, Plan]], int]:
            rows = await self._read(lambda conn: conn.execute(Q["unsent"], (after_id, n)).fetchall())
            page, _ = unreadable.decode_each(rows, lambda r: (codec.notification(r), codec.plan(r)))
            return page, len(rows)

        return await unreadable.fill(read, limit)

    async def due(self) -> dict[str, datetime]:
        """Per channel, when its earliest pending delivery (of the mode in force) is due."""

        def due(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            return conn.execute(Q["due"]).fetchall()

        rows = self._inline.read(due)
        if isinstance(rows, Missed):
            rows = await self._read(due)
        return {channel: codec.dt(at) for channel, at in rows if at is not None}

    async def acknowledged(self, notification_ids: Sequence[str]) -> set[str]:
        ids = json.dumps(list(notification_ids))

        def acknowledged(conn: sqlite3.Connection) -> set[str]:
            return {row[0] for row in conn.execute(Q["acknowledged_among"], (ids,))}

        found = self._inline.read(acknowledged)
        return await self._read(acknowledged) if isinstance(found, Missed) else found

    async def reroute_candidates(self, mode: Mode, limit: int, after_id: str = "") -> list[Notification]:
        async def read(n: int) -> tuple[list[Notification], int]:
            params = (other_mode(mode), after_id, n)
            rows = await self._read(lambda conn: conn.execute(Q["reroute_candidates"], params).fetchall())
            return unreadable.decode_each(rows, codec.notification)[0], len(rows)

        return await unreadable.fill(read, limit)

    async def owed_replans(self) -> set[str]:
        return await self._read(lambda conn: {row[0] for row in conn.execute(Q["owed_replans"])})

    async def planned_routes(self) -> str | None:
        row = await self._read(lambda conn: conn.execute(Q["planned_routes"]).fetchone())
        return None if row is None else str(row[0])

    async def provider(self, events: int = 20, checks: int = 20) -> ProviderView:
        return await self._read(lambda conn: views.provider(conn, events, checks))

    async def queue(self) -> QueueView:
        return await self._read(views.queue)

    async def history(self, since: datetime) -> tuple[list[Transition], list[CheckResult]]:
        """Transitions and check results since ``since``, oldest first (the status page's timeline)."""
        return await self._read(lambda conn: views.history(conn, since))

    async def recent(self, limit: int) -> list[NotificationView]:
        """The newest notifications with their delivery trails."""
        return await unreadable.fill(
            lambda n: self._read(lambda conn: views.notifications(conn, "recent_notification_ids", (n,))),
            limit,
        )

    async def search(self, query: ListFilter) -> list[NotificationView]:
        """Newest first; ``query.before`` is the cursor of the next page."""
        params = {
            "status": query.status,
            "severity": query.severity,
            "since": None if query.since is None else codec.ts(query.since),
            "before": query.before,
            "limit": query.limit,
        }
        return await unreadable.fill(
            lambda n: self._read(lambda conn: views.notifications(conn, "list_ids", {**params, "limit": n})),
            query.limit,
        )

    async def by_key(self, idempotency_key: str) -> str | None:
        row = await self._read(lambda conn: conn.execute(Q["find_by_key"], (idempotency_key,)).fetchone())
        return None if row is None else str(row[0])

    async def by_ack_code(self, code: str) -> str | None:
        key = normalise_ack_code(code)

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(Q["by_ack_code"], (key,)).fetchone()
            row = row or conn.execute(Q["by_superseded_ack_code"], (key,)).fetchone()
            return None if row is None else str(row[0])

        return await self._read(read)

    async def drill(self, drill_id: str) -> list[NotificationView]:
        """The notifications a drill sent, one per channel."""
        found, _ = await self._read(lambda conn: views.notifications(conn, "drill_ids", (drill_id,)))
        return found

    async def latest_drill(self) -> str | None:
        row = await self._read(lambda conn: conn.execute(Q["latest_drill"]).fetchone())
        return None if row is None else str(row[0])

    async def thread_of(self, idempotency_key: str, channel: str, *, any_state: bool = False) -> str | None:
        """What the channel delivered for the notification with that key (its follow-ups thread
        there); ``any_state``: also what a send not delivered (yet) did post (acknowledgements edit it)."""
        params = (idempotency_key, channel, any_state)
        row = await self._read(lambda conn: conn.execute(Q["thread_of"], params).fetchone())
        return None if row is None else str(row[0])

    async def channel_health(self) -> list[ChannelHealth]:
        return await self._read(views.channel_health)

    async def notification(self, notification_id: str) -> NotificationView | None:
        """Its view; :class:`Unreadable` if its row cannot be decoded."""

        def read(conn: sqlite3.Connection) -> NotificationView | None:
            try:
                return views.notification(conn, notification_id)
            except sqlite3.Error:
                raise
            except Exception as exc:
                raise unreadable.refused(notification_id, exc) from exc

        return await self._read(read)
