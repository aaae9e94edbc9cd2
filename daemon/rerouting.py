"""Moving unsent notifications to the plan of the provider's current mode."""

from __future__ import annotations

import asyncio
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


def _routes_plan(notification: Notification, current: Plan) -> bool:
    """Whether the routes planned ``notification`` (what was planned here keeps its plan)."""
    return not on_relay_plan(notification, current)


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
        #: the digests of the owed re-plans (stored) a whole re-plan settles, each with the number
        #: of the latest owe (or resume) of it: only a walk begun after that settles it
        self._owed: dict[str, int] = {}
        self._owes = 0
        #: an owe and a settle one at a time: an owe stored while a settle is on its way would be
        #: deleted by it
        self._marking = asyncio.Lock()
        #: the latest owe was not stored: the next walk stores it before it moves a page
        self._unstored = False
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
        async with self._marking:
            await self._owe()

    async def _owe(self) -> None:
        digest = self._digest()
        if digest is None:
            return
        self._unstored = True
        await self._store.owe_replan(digest, self._clock.now())
        self._unstored = False
        self._owed_now(digest)

    async def resume(self, *, started: bool = False) -> bool:
        """Whether a re-plan by the routes in force is owed: stored by a reload of them and left
        unfinished (a run killed or stopped in its middle), or, with ``started`` (the process's
        first pass, not a node taking the lead), owed now because they are not the routes the
        unsent notifications were last planned by (the file edited while the daemon was stopped,
        or a reload whose owed re-plan a crash kept from being stored): what a reload would have
        owed. A store that has recorded no routes yet (new, or from before the record) takes
        these, owing nothing. A node taking the lead mid-rollout, its routes older than the
        backlog's, leaves the backlog alone, as it leaves another's owed re-plan."""
        # with the owes held off: a reload's, racing a first pass, records its routes after these
        async with self._marking:
            return await self._resume(started)

    async def _resume(self, started: bool) -> bool:
        digest = self._digest()
        if digest is None:
            return False
        owed = digest in await self._store.owed_replans()
        if not owed and not started:  # a node taking the lead: its routes are not compared
            return False
        planned = await self._store.planned_routes()
        if owed:
            if planned != digest:  # another run's routes were owed since: these plan them now
                await self._store.plan_routes(digest)
            self._owed_now(digest)
            return True
        if planned is None:
            await self._store.plan_routes(digest)
        if planned in (None, digest):
            return False
        log.warning(
            "the routes are not those the unsent notifications were planned by: re-planning them",
            extra={"event": "routing.replan_changed_routes"},
        )
        await self._owe()
        return True

    def _owed_now(self, digest: str) -> None:
        self._owes += 1
        self._owed[digest] = self._owes

    async def replan(self, mode: Mode) -> int:
        """After a policy reload, or the provider entering or leaving a state a route has actions
        of its own for (unknown, credentials): give every unsent notification whose plan changed
        its new plan (the routes' notifications only: what was planned here keeps its plan).

        A walk over all of them, every page by the same routes, settles the re-plans owed
        (:meth:`owe`) before it began. One cut short by a stop, or with a page planned by other
        routes (a reload in its middle), settles nothing; one owed again while it walked (a
        reload, a change of state: the pages before it kept the plans of before) is left to the
        walk that owe asked for. An owe the store refused is stored first (StoreUnavailable while
        it cannot, and nothing moved): pages moved by routes nothing records would be left on
        their plans by a start with the routes put back (:meth:`resume`)."""
        if self._unstored:
            await self.owe()
        digest, began = self._digest(), self._owes
        planned_by = {digest}
        total = await self._replan_unsent(mode, _routes_plan, planned_by)
        if not self.stopping() and planned_by == {self._digest()}:
            await self._settle(began)
        return total

    async def _settle(self, began: int) -> None:
        """Settle the re-plans last owed (or resumed) by owe number ``began``, the whole walk's start."""
        async with self._marking:
            settled = [digest for digest, owe in self._owed.items() if owe <= began]
            if not settled:
                return
            await self._store.settle_replans(settled)
            self._owed = {digest: owe for digest, owe in self._owed.items() if owe > began}

    async def rescue(self, mode: Mode, configured: Collection[str]) -> int:
        """At start: give every unsent notification of the routes whose plan names a channel not
        configured any more (removed or renamed while the daemon was down) the routes' plan, a
        relayed message's follow-up included. Nothing else is re-planned, so a restart does not
        restart every plan from its first step."""
        known = set(configured)
        return await self._replan_unsent(mode, lambda _, current: not set(current.channels) <= known)

    async def _replan_unsent(
        self,
        mode: Mode,
        wanted: Callable[[Notification, Plan], bool],
        planned_by: set[str | None] | None = None,
    ) -> int:
        """The routes' plan for every unsent notification ``wanted`` picks, where it differs;
        ``planned_by`` gets the digest of the routes each page was planned by."""
        total, after = 0, ""
        while not self.stopping() and (page := await self._store.unsent(after, BATCH)):
            after = page[-1][0].id
            routes, state = self._routes(), self._state()
            if planned_by is not None:
                planned_by.add(self._digest())
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
