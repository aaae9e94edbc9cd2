"""What the PostgreSQL store does for a cluster of nodes: work announced between them, and the
leader's lease with the token that fences its provider writes.

Every node hears, by LISTEN/NOTIFY (:mod:`daemon.store.postgres_listen`), of work another node
accepted; one node at a time holds the leader's lease (:mod:`daemon.leadership` drives it), and
once leadership is on, the provider row is written only with the current token
(:mod:`daemon.store.postgres_provider`). :class:`~daemon.store.postgres.PostgresStore` inherits
these, as it does the reads of :class:`~daemon.store.postgres_reads.PostgresReads`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from daemon.core.health import HealthSnapshot, Transition
from daemon.node_name import Holder
from daemon.store import postgres_provider
from daemon.store import postgres_views as views
from daemon.store.base import NotLeader
from daemon.store.postgres_listen import WorkListener
from daemon.store.postgres_pool import ms
from daemon.store.postgres_provider import Fence
from daemon.store.postgres_queries import Conn, Q
from daemon.store.postgres_reads import PostgresReads
from daemon.store.postgres_views import LeaderView, NodeView

T = TypeVar("T")


class PostgresCluster(PostgresReads):
    """The store's side of a cluster; :class:`~daemon.store.postgres.PostgresStore` sets these up."""

    node: str
    _listener: WorkListener
    _fenced: bool
    _fence: Fence | None

    if TYPE_CHECKING:

        async def _transaction(self, fn: Callable[[Conn], Awaitable[T]]) -> T: ...

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

    # -- leadership (daemon.leadership drives these) ----------------------------------------------

    async def save_provider(
        self, snapshot: HealthSnapshot, transition: Transition | None, now: datetime
    ) -> None:
        """Unfenced until leadership is on; then only with the current token, else NotLeader."""
        fence = self._fence
        if not self._fenced:
            await self._transaction(
                lambda conn: postgres_provider.save_provider(conn, snapshot, transition, now)
            )
        elif fence is None:
            raise NotLeader(f"node {self.node} is not the leader: it does not decide the provider state")
        else:
            await self._transaction(
                lambda conn: postgres_provider.save_provider_fenced(conn, snapshot, transition, now, fence)
            )

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
            await conn.execute(Q["lock_timeout"], (ms(lease_s / 3),))
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

    async def take_name(self, instance: str, stale_s: float, dead: str | None = None) -> Holder | None:
        """Take this node's name for ``instance`` (:mod:`daemon.node_name`): None when taken, else
        who holds it. Its holder's is taken too if it has not kept it fresh for ``stale_s``, or is
        ``dead``."""

        async def take(conn: Conn) -> Holder | None:
            params = {
                "node": self.node,
                "instance": instance,
                "dead": dead,
                "stale": timedelta(seconds=stale_s),
            }
            if await (await conn.execute(Q["take_node_name"], params)).fetchone() is not None:
                return None
            row = await (await conn.execute(Q["node_name_holder"], params)).fetchone()
            if row is None:  # given back in between: the next try takes it
                return Holder("", datetime.now(UTC), datetime.now(UTC), 0.0)
            return Holder(row["instance"], row["started_at"], row["seen_at"], float(row["age_s"]))

        return await self._transaction(take)

    async def keep_name(self, instance: str, stale_s: float) -> bool:
        """Keep this node's name fresh; False if another instance holds it and has kept it fresh
        for ``stale_s``. A name nobody keeps (its row gone, or an older run's gone stale: the
        database restored from a backup, a failover that lost the last writes) is kept all the same.
        """

        async def keep(conn: Conn) -> bool:
            params = {
                "node": self.node,
                "instance": instance,
                "dead": None,
                "stale": timedelta(seconds=stale_s),
            }
            return await (await conn.execute(Q["take_node_name"], params)).fetchone() is not None

        return await self._transaction(keep)

    async def give_name(self, instance: str) -> None:
        async def give(conn: Conn) -> None:
            await conn.execute(Q["give_node_name"], {"node": self.node, "instance": instance})

        await self._transaction(give)
