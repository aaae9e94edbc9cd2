"""High availability on PostgreSQL: one leader decides the provider state, every node votes.

The leader holds a lease row renewed every third of the lease with one UPDATE on the database's
clock; the lease's version, bumped on every change of holder, is a fencing token that each
provider write checks in the same statement (:mod:`daemon.store.postgres_tx`). Advisory locks
are not used: they are not replicated, vanish on a PostgreSQL failover, and a silently dead
connection can hold one for hours. A leader whose write is fenced off, or that cannot renew
before its lease would have run out, steps down; followers read the state the leader stored.

Every node runs the checks and stores its results under its name (a vantage point); the
leader merges each check's latest fresh result per node into one, down only when at least
``nodes_quorum`` nodes see it down, and feeds that to the HealthTracker as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from datetime import timedelta

from daemon.clock import Clock
from daemon.core.model import CheckResult, CheckStatus
from daemon.monitor import ProviderMonitor
from daemon.store.base import StoreError
from daemon.store.postgres import PostgresStore, PostgresStoreConfig

log = logging.getLogger(__name__)


class Vantage:
    """Merges the nodes' latest fresh results for a check into the one the leader observes."""

    def __init__(self, store: PostgresStore, quorum: int, fresh_s: float) -> None:
        self._store = store
        self._quorum = quorum
        self._fresh = timedelta(seconds=fresh_s)

    async def merge(self, own: CheckResult) -> CheckResult:
        # freshness is judged on the nodes' clocks (results carry their node's time): keep them
        # in NTP sync, or make vantage_fresh generous
        votes = await self._store.vantage_latest(own.check, own.at - self._fresh)
        votes[self._store.node] = own
        down = sorted((n for n, r in votes.items() if r.status == CheckStatus.DOWN))
        tally = f"{len(down)} of {len(votes)} nodes see it down (quorum {self._quorum})"
        if len(down) >= self._quorum:
            voted = own if own.status == CheckStatus.DOWN else votes[down[0]]
            return dataclasses.replace(voted, reason=f"{voted.reason} [{tally}]", at=own.at)
        if own.status != CheckStatus.DOWN:
            return own
        others = [r for n, r in sorted(votes.items()) if r.status != CheckStatus.DOWN]
        if not others:
            # too few nodes reported to reach the quorum: the round counts neither way
            return dataclasses.replace(own, status=CheckStatus.UNKNOWN, reason=f"{own.reason} [{tally}]")
        best = max(others, key=lambda r: r.at)
        return dataclasses.replace(best, reason=f"{best.reason} [{tally}]", at=own.at)


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
        self._deadline = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        store.fence(None)
        monitor.set_vantage(Vantage(store, quorum, fresh_s).merge)
        monitor.set_leading(False)
        monitor.on_deposed(self._deposed)

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

    async def start(self) -> None:
        """Try once at once (a lone node leads from the start), then keep at it in the background."""
        await self.tick()
        self._task = asyncio.create_task(self._run(), name="leadership")

    async def stop(self) -> None:
        """Stop renewing; a leader hands over at once rather than after its lease."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        version, self._version = self._version, None
        self._store.fence(None)
        if version is not None:
            with contextlib.suppress(StoreError):
                await self._store.resign_leadership(version)

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.lease_s / 3)
            if self._stop.is_set():
                return
            try:
                await self.tick()
            except Exception:  # a bug in one round must not silence leadership for good
                log.exception("leadership round failed", extra={"event": "leader.error"})

    async def tick(self) -> None:
        """One renewal or attempt; a follower also refreshes the provider state from the store."""
        sent = self._clock.monotonic()
        try:
            version = await self._store.acquire_leadership(self.lease_s, self._version)
        except StoreError as exc:
            log.warning("leadership: the store did not answer: %s", exc, extra={"event": "leader.error"})
            if self._version is not None and self._clock.monotonic() >= self._deadline:
                await self._step_down("the lease ran out while the store did not answer")
            return
        if version is None:
            if self._version is not None:
                await self._step_down("another node holds the lease")
            else:
                await self._follow()
            return
        self._deadline = sent + self.lease_s
        if self._version != version:
            await self._elected(version)

    async def _elected(self, version: int) -> None:
        self._version = version
        self._store.fence(version)
        log.warning(
            "this node (%s) leads now, lease version %d",
            self._store.node,
            version,
            extra={"event": "leader.elected", "node": self._store.node, "version": version},
        )
        await self._monitor.lead()

    async def _step_down(self, why: str) -> None:
        self._deposed(why)
        await self._follow()

    async def _follow(self) -> None:
        with contextlib.suppress(StoreError):
            await self._monitor.follow()

    def _deposed(self, why: str) -> None:
        if self._version is None:
            return
        log.warning(
            "this node (%s) steps down: %s",
            self._store.node,
            why,
            extra={"event": "leader.deposed", "node": self._store.node, "version": self._version},
        )
        self._version = None
        self._store.fence(None)
        self._monitor.set_leading(False)
