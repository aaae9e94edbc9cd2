"""The provider monitor: feeds the pure HealthTracker, persists what it decides, acts on it.

Every observation goes through one lock so transitions are decided and stored in order. A
change of routing mode (healthy ↔ outage) makes the dispatcher re-plan everything not yet sent.

With several nodes (daemon.leadership) only the leader decides: a follower stores its check
results (its votes) and adopts the state the leader stored; a leader whose write is fenced off
steps down the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence

from daemon.clock import Clock
from daemon.core.assessment import Explanation, Policy, Role
from daemon.core.health import RECENT, HealthTracker, Thresholds, Transition
from daemon.core.model import CheckResult, Mode, ProviderState
from daemon.store.base import NotLeader, Store
from daemon.store.values import ProviderView

log = logging.getLogger(__name__)

#: stored results reloaded at start so a restart does not forget each check's latest word
SEED_RESULTS = 200


class ProviderMonitor:
    def __init__(
        self, store: Store, thresholds: Thresholds, clock: Clock, policy: Policy | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self._tracker = HealthTracker(thresholds, policy=policy)
        self._lock = asyncio.Lock()
        self._mode_listeners: list[Callable[[Mode], None]] = []
        self._failure_listeners: list[Callable[[], None]] = []
        self._check_listeners: list[Callable[[CheckResult], None]] = []
        self._transition_listeners: list[Callable[[Transition], None]] = []
        self._deposed_listeners: list[Callable[[str], None]] = []
        self._lead_listeners: list[Callable[[], None]] = []
        #: alone (SQLite) a node always leads; daemon.leadership switches this
        self._leading = True
        self._vantage: Callable[[CheckResult], Awaitable[CheckResult]] | None = None
        #: extra lines for explain (who decides, every node's view), set by daemon.leadership
        self._notes: tuple[str, ...] = ()
        #: following: the checks as the leader counts them, and the last transition it stored
        self._shown: dict[str, tuple[CheckResult, ...]] = {}
        self._last_event: Transition | None = None

    @property
    def state(self) -> ProviderState:
        return self._tracker.state

    @property
    def mode(self) -> Mode:
        return self._tracker.mode

    @property
    def tracker(self) -> HealthTracker:
        return self._tracker

    def explain(self) -> Explanation:
        """Why the state is what it is: each check's recent results and role, in words.

        A follower's tracker holds the leader's stored decision and the checks as the leader
        counts them (given to :meth:`follow`), so its explain reads like the leader's.
        """
        told = self._tracker.explain(self._clock.now())
        event = self._last_event
        decided = (
            ()
            if self._leading or event is None
            else (
                f"the leader's last transition ({event.at.isoformat(timespec='seconds')}): "
                f"{event.from_state} -> {event.to_state}: {event.cause}",
            )
        )
        return dataclasses.replace(told, why=(*told.why, *decided, *self._notes))

    def annotate(self, lines: Sequence[str]) -> None:
        """Lines ``explain`` adds to its why: who decides and what every node sees."""
        self._notes = tuple(lines)

    def on_mode_change(self, listener: Callable[[Mode], None]) -> None:
        self._mode_listeners.append(listener)

    def on_check(self, listener: Callable[[CheckResult], None]) -> None:
        self._check_listeners.append(listener)

    def on_transition(self, listener: Callable[[Transition], None]) -> None:
        self._transition_listeners.append(listener)

    def on_passive_failure(self, listener: Callable[[], None]) -> None:
        """Called after a real send implicated the provider (e.g. to run the checks at once)."""
        self._failure_listeners.append(listener)

    @property
    def leading(self) -> bool:
        return self._leading

    @property
    def controls(self) -> tuple[str, ...]:
        """The control checks' names: what says our own network works."""
        return self._tracker.policy.named(Role.CONTROL)

    def set_leading(self, leading: bool) -> None:
        self._leading = leading

    def set_vantage(self, merge: Callable[[CheckResult], Awaitable[CheckResult]]) -> None:
        """Decide on what ``merge`` makes of a result (e.g. the nodes' votes), not on it alone."""
        self._vantage = merge

    def on_deposed(self, listener: Callable[[str], None]) -> None:
        """Called when a provider write was fenced off: this node is no longer the leader."""
        self._deposed_listeners.append(listener)

    def on_lead(self, listener: Callable[[], None]) -> None:
        """Called when this node is elected, once it has adopted the stored state (e.g. to pick up
        work a dead leader left unfinished)."""
        self._lead_listeners.append(listener)

    async def load(self) -> None:
        """Resume the state stored by the last run, and each check's latest results."""
        await self._adopt(await self._store.provider(events=0, checks=SEED_RESULTS))
        log.info(
            "provider state resumed: %s",
            self.state,
            extra={"event": "provider.resumed", "state": self.state.value},
        )

    async def lead(self, checks: Sequence[CheckResult] | None = None) -> None:
        """Elected: decide from now on, starting from the state the last leader stored.

        ``checks``: the latest results as the leader counts them (every node's merged), to start
        from instead of the stored results, which are every node's raw ones: a node whose own
        network fails reports the provider and its controls down, which raw reads as ours failing.
        """
        async with self._lock:
            self._leading = True
            self._shown, self._last_event = {}, None
            view = await self._store.provider(events=0, checks=SEED_RESULTS if checks is None else 0)
            await self._adopt(view if checks is None else dataclasses.replace(view, checks=tuple(checks)))
            for listener in self._lead_listeners:
                listener()

    async def follow(self, checks: Sequence[CheckResult] = ()) -> None:
        """A follower adopts the state the leader stored (the routing mode comes with it).

        ``checks`` are the latest results as the leader counts them (every node's merged):
        a follower's own results decide nothing, so these are what its explain shows.
        """
        async with self._lock:
            self._leading = False
            view = await self._store.provider(events=1, checks=0)
            self._last_event = view.events[0] if view.events else None
            for result in checks:
                shown = self._shown.get(result.check, ())
                if not shown or result.at > shown[-1].at:
                    self._shown[result.check] = (*shown, result)[-RECENT:]
            before = self._tracker.mode
            self._tracker = HealthTracker(self._tracker.thresholds, view.snapshot, self._tracker.policy)
            self._tracker.seed(r for results in self._shown.values() for r in results)
            self._mode_changed(before)

    async def _adopt(self, view: ProviderView) -> None:
        before = self._tracker.mode
        self._tracker = HealthTracker(self._tracker.thresholds, view.snapshot, self._tracker.policy)
        self._tracker.seed(reversed(view.checks))
        self._mode_changed(before)

    async def check_result(self, result: CheckResult) -> None:
        async with self._lock:
            await self._store.record_check(result)
            for notify in self._check_listeners:
                notify(result)
            if not self._leading:
                return
            decided = result if self._vantage is None else await self._vantage(result)
            before, undo = self._tracker.mode, copy.deepcopy(self._tracker)
            with contextlib.suppress(NotLeader):  # fenced off: stepped down, follows from now on
                await self._commit(self._tracker.observe(decided, self._clock.now()), before, undo)

    async def passive_failure(self, reason: str) -> None:
        if not self._leading:  # a follower's own checks, run at once, are its word to the leader
            for listener in self._failure_listeners:
                listener()
            return
        async with self._lock:
            counted = self._tracker.snapshot.last_passive_at
            before, undo = self._tracker.mode, copy.deepcopy(self._tracker)
            try:
                transition = self._tracker.observe_passive_failure(self._clock.now(), reason)
                await self._commit(transition, before, undo)
            except NotLeader:  # fenced off: stepped down, so the checks run now are its word
                fresh = True
            else:
                fresh = self._tracker.snapshot.last_passive_at != counted
            if fresh:
                for listener in self._failure_listeners:
                    listener()

    async def force(self, state: ProviderState, reason: str) -> None:
        async with self._lock:
            self._must_lead()
            before, undo = self._tracker.mode, copy.deepcopy(self._tracker)
            await self._commit(self._tracker.force(state, self._clock.now(), reason), before, undo)

    async def release(self) -> None:
        async with self._lock:
            self._must_lead()
            before, undo = self._tracker.mode, copy.deepcopy(self._tracker)
            await self._commit(self._tracker.release(self._clock.now()), before, undo)

    def _must_lead(self) -> None:
        if not self._leading:
            raise NotLeader("this node follows: only the leader changes the provider state")

    async def _commit(self, transition: Transition | None, mode_before: Mode, undo: HealthTracker) -> None:
        """Store the decision; fenced off (NotLeader), forget it, step down, and raise. Not stored
        for any other reason (the store cut off), forget it too (``undo``: the tracker before it)
        and raise: kept in memory, the retried decision found nothing to change, so the state
        moved (routing with it) with no transition stored, announced or caught up after."""
        try:
            await self._store.save_provider(self._tracker.snapshot, transition, self._clock.now())
        except NotLeader as exc:
            # deposed while paused or cut off: the listeners (daemon.leadership) log the evidence
            self._leading = False
            for listener in self._deposed_listeners:
                listener(str(exc))
            self._tracker = HealthTracker(
                self._tracker.thresholds, (await self._store.provider(0, 0)).snapshot, self._tracker.policy
            )
            self._mode_changed(mode_before)
            raise
        except BaseException:
            self._tracker = undo
            raise
        if transition is not None:
            self._announce(transition)
        self._mode_changed(mode_before)

    def _mode_changed(self, before: Mode) -> None:
        if self._tracker.mode != before:
            for listener in self._mode_listeners:
                listener(self._tracker.mode)

    def _announce(self, transition: Transition) -> None:
        for notify in self._transition_listeners:
            notify(transition)
        log.warning(
            "provider %s -> %s: %s",
            transition.from_state,
            transition.to_state,
            transition.cause,
            extra={
                "event": "provider.transition",
                "from_state": transition.from_state.value,
                "to_state": transition.to_state.value,
                "cause": transition.cause,
            },
        )
