"""Moving unsent notifications to the plan of the provider's current mode."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence

from daemon.clock import Clock
from daemon.core.model import Mode, Notification, Plan, ProviderState
from daemon.core.routing import Route, plan_for
from daemon.refusals import on_relay_plan
from daemon.store.base import Store

log = logging.getLogger(__name__)

BATCH = 500


def _never() -> bool:
    return False


class Rerouter:
    """Walks the unsent notifications a page at a time. A long outage's backlog is hundreds of
    thousands of pages' worth: each page is reported to ``progress`` (the dispatcher's watchdog
    evidence: a long walk is work, not a hang) and the walk ends early once ``stopping`` says so
    (what it left is walked again when next needed: at the next start, the next change of mode)."""

    def __init__(
        self,
        store: Store,
        routes: Callable[[], Sequence[Route]],
        clock: Clock,
        state: Callable[[], ProviderState | None] = lambda: None,
        digest: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._store = store
        self._routes = routes
        self._clock = clock
        #: the provider's state: in an overlay (unknown, credentials) a route's own action for it wins
        self._state = state
        #: the digest of ``routes`` (Config.policy_digest); None: a re-plan is owed in memory only
        self._digest = digest
        #: the digests of the owed re-plans (stored) this node's next whole re-plan settles
        self._owed: set[str] = set()
        self.progress: Callable[[], None] = lambda: None
        self.stopping: Callable[[], bool] = _never

    async def sweep(self, mode: Mode) -> int:
        """Re-plan every unsent notification whose plan was made for another mode: by the routes,
        or, for a notification planned here (a drill's, an announcement's), by its own plans."""
        total = 0
        while moved := await self._store.repin(mode, self._clock.now(), BATCH):
            total += moved
            if self._paged():
                break
        after = ""
        while not self.stopping() and (
            candidates := await self._store.reroute_candidates(mode, BATCH, after)
        ):
            after = candidates[-1].id
            routes = self._routes()
            state = self._state()
            plans = {n.id: plan_for(n, mode, routes, self._clock.now(), state) for n in candidates}
            total += await self._store.reroute(mode, plans, self._clock.now())
            self._paged()
        self._log(total, mode)
        return total

    async def owe(self) -> None:
        """A policy reload: store that the unsent notifications owe a re-plan by the routes now in
        force, before it starts, so that a daemon killed (or stopped) before it has walked them all
        does it at its next start (:meth:`resume`) rather than leave them on the old plans."""
        digest = self._digest()
        if digest is not None:
            await self._store.owe_replan(digest, self._clock.now())
            self._owed.add(digest)

    async def resume(self) -> bool:
        """Whether the store holds a re-plan owed by the routes in force (a reload's, cut short)."""
        digest = self._digest()
        if digest is None or digest not in await self._store.owed_replans():
            return False
        self._owed.add(digest)
        return True

    async def replan(self, mode: Mode) -> int:
        """After a policy reload, or the provider entering or leaving a state a route has actions
        of its own for (unknown, credentials): give every unsent notification whose plan changed
        its new plan (the routes' notifications only: what was planned here keeps its plan).

        A walk over all of them by the same routes settles the re-plans owed (:meth:`owe`); one
        cut short by a stop, or by a reload in its middle (which asks for another), does not."""
        digest = self._digest()
        total = await self._replan_unsent(mode, lambda n, current: not on_relay_plan(n, current))
        if not self.stopping() and self._digest() == digest:
            await self._settle()
        return total

    async def _settle(self) -> None:
        settled, self._owed = self._owed, set()
        if not settled:
            return
        try:
            await self._store.settle_replans(settled)
        except BaseException:
            self._owed |= settled  # still owed: the next whole re-plan settles them
            raise

    async def rescue(self, mode: Mode, configured: Collection[str]) -> int:
        """At start: give every unsent notification of the routes whose plan names a channel not
        configured any more (removed or renamed while the daemon was down) the routes' plan, a
        relayed message's follow-up included. Nothing else is re-planned, so a restart does not
        restart every plan from its first step."""
        known = set(configured)
        return await self._replan_unsent(mode, lambda _, current: not set(current.channels) <= known)

    async def _replan_unsent(self, mode: Mode, wanted: Callable[[Notification, Plan], bool]) -> int:
        """The routes' plan for every unsent notification ``wanted`` picks, where it differs."""
        total, after = 0, ""
        while not self.stopping() and (page := await self._store.unsent(after, BATCH)):
            after = page[-1][0].id
            routes, state = self._routes(), self._state()
            changed = {}
            for notification, current in page:
                if not wanted(notification, current):
                    continue
                new = plan_for(notification, mode, routes, self._clock.now(), state)
                if new != current:
                    changed[notification.id] = new
            if changed:
                total += await self._store.reroute(mode, changed, self._clock.now(), force=True)
            self._paged()
        self._log(total, mode)
        return total

    def _paged(self) -> bool:
        """A page done: told as progress; whether to stop walking."""
        self.progress()
        return self.stopping()

    def _log(self, total: int, mode: Mode) -> None:
        if total:
            log.info(
                "rerouted %d notifications to their %s plan",
                total,
                mode,
                extra={"event": "routing.rerouted", "mode": mode, "count": total},
            )
