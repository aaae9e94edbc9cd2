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
    ) -> None:
        self._store = store
        self._routes = routes
        self._clock = clock
        #: the provider's state: in an overlay (unknown, credentials) a route's own action for it wins
        self._state = state
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

    async def replan(self, mode: Mode) -> int:
        """After a policy reload, or the provider entering or leaving a state a route has actions
        of its own for (unknown, credentials): give every unsent notification whose plan changed
        its new plan (the routes' notifications only: what was planned here keeps its plan)."""
        return await self._replan_unsent(mode, lambda n, current: not on_relay_plan(n, current))

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
