"""The PostgreSQL store's reads: each takes one connection of the pool, outside any transaction.

:class:`~daemon.store.postgres.PostgresStore` inherits them; the queries that build views are in
:mod:`daemon.store.postgres_views`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from daemon.core.health import Transition
from daemon.core.model import CheckResult, Mode, Notification, Plan, normalise_ack_code
from daemon.store import postgres_views as views
from daemon.store import unreadable
from daemon.store.base import StoreUnavailable
from daemon.store.postgres_queries import Conn, Q
from daemon.store.values import ChannelHealth, ListFilter, NotificationView, ProviderView, QueueView

T = TypeVar("T")


class PostgresReads:
    _pool: AsyncConnectionPool[Conn]

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

    async def reroute_candidates(self, mode: Mode, limit: int, after_id: str = "") -> list[Notification]:
        return await unreadable.fill(
            lambda n: self._read(lambda conn: views.reroute_candidates(conn, mode, n, after_id)), limit
        )

    async def unsent(self, after_id: str, limit: int) -> list[tuple[Notification, Plan]]:
        return await unreadable.fill(
            lambda n: self._read(lambda conn: views.unsent(conn, after_id, n)), limit
        )

    async def owed_replans(self) -> set[str]:
        async def read(conn: Conn) -> set[str]:
            return {row["routes"] for row in await (await conn.execute(Q["owed_replans"])).fetchall()}

        return await self._read(read)

    async def planned_routes(self) -> str | None:
        async def read(conn: Conn) -> str | None:
            row = await (await conn.execute(Q["planned_routes"])).fetchone()
            return None if row is None else str(row["routes"])

        return await self._read(read)

    async def provider(self, events: int = 20, checks: int = 20) -> ProviderView:
        return await self._read(lambda conn: views.provider(conn, events, checks))

    async def history(self, since: datetime) -> tuple[list[Transition], list[CheckResult]]:
        """Transitions and check results since ``since``, oldest first (the status page's timeline)."""
        return await self._read(lambda conn: views.history(conn, since))

    async def queue(self) -> QueueView:
        return await self._read(views.queue)

    async def thread_of(self, idempotency_key: str, channel: str, *, any_state: bool = False) -> str | None:
        """What the channel delivered for the notification with that key (its follow-ups thread
        there); ``any_state``: also what a send not delivered (yet) did post (acknowledgements edit it)."""

        async def read(conn: Conn) -> str | None:
            params = (idempotency_key, channel, any_state)
            row = await (await conn.execute(Q["thread_of"], params)).fetchone()
            return None if row is None else str(row["remote_id"])

        return await self._read(read)

    async def channel_health(self) -> list[ChannelHealth]:
        return await self._read(views.channel_health)

    async def latest_drill(self) -> str | None:
        return await self._read(views.latest_drill)

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
            "since": query.since,
            "before": query.before,
            "limit": query.limit,
        }
        return await unreadable.fill(
            lambda n: self._read(lambda conn: views.notifications(conn, "list_ids", {**params, "limit": n})),
            query.limit,
        )

    async def by_key(self, idempotency_key: str) -> str | None:
        async def read(conn: Conn) -> str | None:
            row = await (await conn.execute(Q["find_by_key"], (idempotency_key,))).fetchone()
            return None if row is None else str(row["id"])

        return await self._read(read)

    async def by_ack_code(self, code: str) -> str | None:
        async def read(conn: Conn) -> str | None:
            key = (normalise_ack_code(code),)
            row = await (await conn.execute(Q["by_ack_code"], key)).fetchone()
            if row is None:
                row = await (await conn.execute(Q["by_superseded_ack_code"], key)).fetchone()
            return None if row is None else str(row["id"])

        return await self._read(read)

    async def drill(self, drill_id: str) -> list[NotificationView]:
        """The notifications a drill sent, one per channel."""
        found, _ = await self._read(lambda conn: views.notifications(conn, "drill_ids", (drill_id,)))
        return found

    async def notification(self, notification_id: str) -> NotificationView | None:
        """Its view; :class:`Unreadable` if its row cannot be decoded."""

        async def read(conn: Conn) -> NotificationView | None:
            try:
                return await views.notification(conn, notification_id)
            except psycopg.Error:
                raise
            except Exception as exc:
                raise unreadable.refused(notification_id, exc) from exc

        return await self._read(read)
