"""High availability on PostgreSQL: one leader decides the provider state, every node votes.

The leader holds a lease row renewed every third of the lease with one UPDATE on the database's
clock; the lease's version, bumped on every change of holder, is a fencing token that each
provider write checks in the same statement (:mod:`daemon.store.postgres_provider`). Advisory locks
are not used: they are not replicated, vanish on a PostgreSQL failover, and a silently dead
connection can hold one for hours. A leader whose write is fenced off, or that cannot renew
before its lease would have run out, steps down; followers read the state the leader stored.

Every node runs the checks and stores its results under its name (a vantage point); the
leader merges each check's latest fresh result per node into one, down only when at least
``nodes_quorum`` nodes see it down with their own controls up (the failures of a node whose
controls fail are no votes: :mod:`daemon.vantage`), and feeds that to the HealthTracker.
Every round, each node also reads the nodes' latest results back for its explain: a follower's
own tracker decides nothing, so what it shows is the leader's stored decision and that view.
Before its first round a node takes its name for this process, and every round keeps it
(:mod:`daemon.node_name`): a second process running under the same name stops the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from daemon import node_name
from daemon.clock import Clock
from daemon.monitor import ProviderMonitor
from daemon.node_name import NodeNameInUse
from daemon.store.base import StoreError
from daemon.store.postgres import PostgresStore, PostgresStoreConfig
from daemon.vantage import Outlook, Vantage, outlook

__all__ = ["Leadership", "Vantage"]

log = logging.getLogger(__name__)


class Leadership:
    """Acquires, renews and gives up the lead; tells the monitor whether to decide or follow."""

    def __init__(
        self,
        store: PostgresStore,
        monitor: ProviderMonitor,
        clock: Clock,
        *,
        lease_s: float,
        quorum: int = 1,
        fresh_s: float = 60.0,
    ) -> None:
        self._store = store
        self._monitor = monitor
        self._clock = clock
        self.lease_s = lease_s
        self._version: int | None = None
        #: the stored state adopted (and the lead listeners run) for the lease held now
        self._adopted = False
        self._deadline = 0.0
        self._quorum = quorum
        self._fresh = timedelta(seconds=fresh_s)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: this process, holding the node's name (table node_names)
        self._instance = node_name.new_instance()
        self._named = False
        store.fence(None)
        monitor.set_vantage(Vantage(store, quorum, fresh_s, lambda: monitor.tracker.policy).merge)
        monitor.set_leading(False)
        monitor.on_deposed(lambda why: self._fenced("provider", why))

    @classmethod
    def from_config(
        cls, config: PostgresStoreConfig, store: PostgresStore, monitor: ProviderMonitor, clock: Clock
    ) -> Leadership:
        return cls(
            store,
            monitor,
            clock,
            lease_s=config.leader_lease.total_seconds(),
            quorum=config.nodes_quorum,
            fresh_s=config.vantage_fresh.total_seconds(),
        )

    @property
    def is_leader(self) -> bool:
        """Leader, and its lease (counted from before the renewal was sent) has not run out."""
        return self._version is not None and self._clock.monotonic() < self._deadline

    @property
    def monitor(self) -> ProviderMonitor:
        return self._monitor

    @property
    def role(self) -> str:
        return "leader" if self.is_leader else "follower"

    @property
    def version(self) -> int | None:
        return self._version

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The rounds in the background, once started; it ends with NodeNameInUse if the name is lost."""
        return self._task

    async def start(self) -> None:
        """Take the node's name (NodeNameInUse if a live process holds it), try for the lead at once
        (a lone node leads from the start), then keep at it in the background."""
        await node_name.take(self._store, self._instance, stale_s=self.lease_s, poll_s=self.lease_s / 6)
        self._named = True
        await self.tick()
        self._task = asyncio.create_task(self._run(), name="leadership")

    async def stop(self) -> None:
        """Stop renewing; a leader hands over at once rather than after its lease."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        version, self._version, self._adopted = self._version, None, False
        self._store.fence(None)
        if version is not None:
            with contextlib.suppress(StoreError):
                await self._store.resign_leadership(version)
        if self._named:
            self._named = False
            with contextlib.suppress(StoreError):  # a restart takes it back at once
                await self._store.give_name(self._instance)

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.lease_s / 3)
            if self._stop.is_set():
                return
            try:
                await self.tick()
            except NodeNameInUse:
                raise  # the daemon stops (daemon.app): another process runs under this name
            except Exception:  # a bug in one round must not silence leadership for good
                log.exception("leadership round failed", extra={"event": "leader.error"})

    async def tick(self) -> None:
        """One renewal or attempt; then the node reads back the decision and every node's view."""
        if self._named:
            await self._keep_name()
        sent = self._clock.monotonic()
        try:
            version = await self._store.acquire_leadership(self.lease_s, self._version)
        except StoreError as exc:
            log.warning("leadership: the store did not answer: %s", exc, extra={"event": "leader.error"})
            if self._version is not None and self._clock.monotonic() >= self._deadline:
                self._deposed("the lease ran out while the store did not answer")
                await self._follow()
            return
        if version is None:
            # a renewal carrying our token updated nothing: the token is stale, another node leads
            self._fenced("lease", "another node holds the lease")
            await self._follow()
            return
        self._deadline = sent + self.lease_s
        if self._version != version or not self._adopted:
            await self._elected(version)
        with contextlib.suppress(StoreError):
            self._monitor.annotate(self._lines(await self._outlook()))

    async def _keep_name(self) -> None:
        """Keep the node's name fresh; another process took it and keeps it (this one stalled past
        a lease meanwhile): step down and raise NodeNameInUse."""
        try:
            kept = await self._store.keep_name(self._instance, stale_s=self.lease_s)
        except StoreError:
            return  # the lease's own write says what the store's trouble means
        if kept:
            return
        error = NodeNameInUse(
            f"another process took the node name {self._store.node!r} while this one stalled: "
            "give each node its own store.node"
        )
        log.error("%s", error, extra={"event": "node.name_taken", "node": self._store.node})
        self._deposed("another process runs under this node's name")
        raise error

    async def _elected(self, version: int) -> None:
        if self._version != version:
            self._version, self._adopted = version, False
            self._store.fence(version)
            log.warning(
                "this node (%s) leads now, lease version %d",
                self._store.node,
                version,
                extra={"event": "leader.elected", "node": self._store.node, "version": version},
            )
        seen: Outlook | None = None
        with contextlib.suppress(StoreError):  # then from every node's stored results, raw
            seen = await self._outlook()
        try:
            await self._monitor.lead(None if seen is None else seen.checks)
        except StoreError as exc:
            # The stored state unread, it decides nothing, and its lead listeners (the announcer's
            # resume, the catch-up, an owed re-plan) have not run: the next round tries again.
            self._monitor.set_leading(False)
            log.warning(
                "leadership: the stored state could not be read: %s", exc, extra={"event": "leader.error"}
            )
            return
        self._adopted = True

    async def _follow(self) -> None:
        """Adopt the leader's stored decision; show the checks as it counts them."""
        seen: Outlook | None = None
        with contextlib.suppress(StoreError):
            seen = await self._outlook()
            self._monitor.annotate(self._lines(seen))
        with contextlib.suppress(StoreError):
            await self._monitor.follow(() if seen is None else seen.checks)

    async def _outlook(self) -> Outlook:
        nodes = await self._store.nodes(self._clock.now() - self._fresh)
        return outlook(nodes, self._store.node, self._monitor.tracker.policy, self._quorum)

    def _lines(self, seen: Outlook) -> list[str]:
        me, votes = self._store.node, f"every node's votes (quorum {self._quorum})"
        if self._version is not None:
            head = f"this node ({me}) leads (lease version {self._version}) and decides on {votes}"
        else:
            head = f"this node ({me}) follows: {seen.leader or 'no node'} leads and decides on {votes}"
        return [head, *seen.lines]

    def _fenced(self, write: str, why: str) -> None:
        """A write carrying this node's token updated nothing: say so (the evidence), step down."""
        if self._version is None:
            return
        log.warning(
            "this node (%s) is fenced off: its %s write with lease version %d updated nothing: %s",
            self._store.node,
            write,
            self._version,
            why,
            extra={
                "event": "leader.fenced",
                "node": self._store.node,
                "version": self._version,
                "write": write,
            },
        )
        self._deposed(why)

    def _deposed(self, why: str) -> None:
        if self._version is None:
            return
        log.warning(
            "this node (%s) steps down: %s",
            self._store.node,
            why,
            extra={"event": "leader.deposed", "node": self._store.node, "version": self._version},
        )
        self._version, self._adopted = None, False
        self._store.fence(None)
        self._monitor.set_leading(False)
        # until the nodes' view can be read again (_follow), not the leader's lines of before
        self._monitor.annotate([f"this node ({self._store.node}) follows: it stepped down ({why})"])
