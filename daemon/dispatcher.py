"""The dispatcher: claims due deliveries, sends them, records every outcome.

The outbox row is the truth: a delivery is claimed (``in_flight``) before it is sent and its
outcome is committed after, so a crash between the two re-sends it on restart (at least once;
the notification id travels as the idempotency key so receivers can drop the repeat).
One failing channel never holds up the others: each has its own cap on sends in flight
(:mod:`daemon.send_slots`). This module holds the loop: when to look at the outbox, the re-plans
due before a pass claims, and the drain at shutdown; what a pass claims for which channel (a
digest-enabled channel's one send at a time included) is :mod:`daemon.claiming`, one send and the
recording of its outcome :mod:`daemon.delivering`, the per-channel policies
:mod:`daemon.dispatch_policy`.

A bug before the send (a renderer or a digest that raises) is recorded for the delivery it hit,
as a retry and in the end a failure (``delivery.bug``): the loop never dies of it and no claim is
left in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping

from channels.base import Channel, ChannelError
from daemon.claiming import Claimer, digesting_channels
from daemon.clock import Clock
from daemon.core.model import Mode, ProviderState
from daemon.delivering import Deliverer
from daemon.dispatch_policy import ChannelPolicy, DispatchSettings
from daemon.outcomes import reloaded
from daemon.refusals import Bounces
from daemon.rendering import Renderer
from daemon.rerouting import Rerouter
from daemon.send_slots import SendSlots
from daemon.store.base import Store, StoreError, StoreUnavailable
from daemon.store.values import Claimed, Outcome
from daemon.trouble import Trouble

log = logging.getLogger(__name__)

#: the shortest time between two looks at the outbox
MIN_PASS_INTERVAL_S = 0.005


class Dispatcher:
    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        policies: Mapping[str, ChannelPolicy],
        *,
        clock: Clock,
        state: Callable[[], ProviderState],
        mode: Callable[[], Mode],
        rerouter: Rerouter,
        on_primary_failure: Callable[[str], Awaitable[None]],
        settings: DispatchSettings | None = None,
        rand: Callable[[], float] = random.random,
        renderer: Renderer | None = None,
        bounces: Bounces | None = None,
    ) -> None:
        self._store = store
        self._channels = dict(channels)
        self._policies = dict(policies)
        self._clock = clock
        self._state = state
        self._mode = mode
        self._rerouter = rerouter
        # a walk over a long backlog is this loop's work: each page feeds the watchdog, and a stop
        # does not wait for the rest
        rerouter.progress = self._progressed
        rerouter.stopping = lambda: self._stopping
        self._settings = settings or DispatchSettings()
        renderer = renderer or Renderer(state)
        self._wake = asyncio.Event()
        self._slots = SendSlots(self._channels, self._policies, self._wake.set)
        self._deliverer = self._new_deliverer(renderer, on_primary_failure, rand, bounces)
        self._claimer = self._new_claimer(renderer, state)
        self._stopping = False
        self._sweep_due = True
        self._replan_due = False
        # A re-plan a reload owed when the last run ended (killed, or stopped in its middle): the
        # first pass looks for it (Rerouter.resume), as does a node taking the lead; the first
        # also compares the routes with those the backlog was planned by
        self._resume_due = True
        self._resumed = False
        # A channel removed or renamed while the daemon was down: the first pass gives what the
        # routes planned for it the routes' plan (Rerouter.rescue).
        self._rescue_due = True
        self._pass_listeners: list[Callable[[], None]] = []
        self._store_listeners: list[Callable[[StoreUnavailable | None], None]] = []
        #: monotonic time of the loop's last completed pass (the watchdog's evidence of progress)
        self.last_pass_at = clock.monotonic()
        self._released_at = float("-inf")
        self._empty_passes = 0

    def _new_deliverer(
        self,
        renderer: Renderer,
        on_primary_failure: Callable[[str], Awaitable[None]],
        rand: Callable[[], float],
        bounces: Bounces | None,
    ) -> Deliverer:
        """Sends within this dispatcher's slots; a stale mode found at a send calls for a sweep."""
        return Deliverer(
            self._store,
            self._channels,
            self._policies,
            clock=self._clock,
            mode=self._mode,
            slots=self._slots,
            renderer=renderer,
            on_primary_failure=on_primary_failure,
            on_stale_mode=self.request_sweep,
            poll_s=self._settings.poll_s,
            rand=rand,
            bounces=bounces,
        )

    def _new_claimer(self, renderer: Renderer, state: Callable[[], ProviderState]) -> Claimer:
        """Claims within this dispatcher's slots; a stale mode found before a send calls for a sweep."""
        return Claimer(
            self._store,
            self._channels,
            digesting_channels(self._channels, self._policies, renderer, state),
            clock=self._clock,
            mode=self._mode,
            slots=self._slots,
            deliverer=self._deliverer,
            settings=self._settings,
            on_stale_mode=self.request_sweep,
        )

    def on_outcome(self, listener: Callable[[str, Claimed, Outcome, ChannelError | None], None]) -> None:
        """Called after each send's outcome is recorded (channel, delivery, outcome, the error if any)."""
        self._deliverer.on_outcome(listener)

    def on_pass(self, listener: Callable[[], None]) -> None:
        """Called after every completed pass over the outbox, and every page of a long walk over its
        unsent notifications (the watchdog's evidence of progress)."""
        self._pass_listeners.append(listener)

    def on_store(self, listener: Callable[[StoreUnavailable | None], None]) -> None:
        """Called after every pass over the outbox with the store's failure, or None: whether it
        could be read and claimed from (readiness, :mod:`daemon.store_health`)."""
        self._store_listeners.append(listener)

    def wake(self) -> None:
        """New work or a new mode: look at the outbox now rather than at the next poll."""
        self._wake.set()

    def request_sweep(self) -> None:
        self._sweep_due = True
        self._wake.set()

    def request_replan(self) -> None:
        """The policy changed: re-plan every unsent notification whose plan differs."""
        self._replan_due = True
        self._wake.set()

    async def owe_replan(self) -> None:
        """A policy reload: store the re-plan as owed (:meth:`Rerouter.owe`), then request it."""
        try:
            await self._rerouter.owe()
        except StoreError as exc:  # the walk stores it first (Rerouter.replan), moving nothing till then
            log.error(
                "the re-plan the reload owes could not be stored: %s",
                exc,
                extra={"event": "routing.replan_unstored"},
            )
        self.request_replan()

    def resume_replan(self) -> None:
        """Look for a re-plan owed by the routes in force that another run (or node) left unfinished."""
        self._resume_due = True
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return self._slots.total

    @property
    def waiting(self) -> int:
        """Claims waiting for a digest-enabled channel's next send slot."""
        return self._claimer.waiting

    async def run(self) -> None:
        """Dispatch until :meth:`stop`; then wait for in-flight sends within the grace period."""
        await self._store.release_claims(self._clock.now())
        trouble = Trouble(log, "the outbox cannot be read or claimed", "store.failed")
        while not self._stopping:
            started = self._clock.monotonic()
            try:
                wait_s = await self._pass()
            except StoreUnavailable as exc:
                # Intake answers 503 meanwhile; sends resume when the store can commit again.
                # Still progress for the watchdog: a restart would not free a disk or bring
                # the database back (docs/deployment.md).
                trouble.failed(self._clock.monotonic(), exc)
                self._told_store(exc)
                wait_s = self._settings.poll_s
            else:
                trouble.succeeded(self._clock.monotonic())
                self._told_store(None)
            self._progressed()
            await self._idle(wait_s, self._pace_from(started))
        await self._drain()

    def _told_store(self, failure: StoreUnavailable | None) -> None:
        for listener in self._store_listeners:
            listener(failure)

    def _progressed(self) -> None:
        """A pass, or a page of a long one, done: the watchdog's evidence that the loop moves."""
        self.last_pass_at = self._clock.monotonic()
        for listener in self._pass_listeners:
            listener()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _pass(self) -> float:
        """The re-plans due, then the claims (:meth:`Claimer.claim`); how long until more is due."""
        await self._release_expired()
        await self._replan()
        if self._sweep_due:
            self._sweep_due = False
            await self._rerouter.sweep(self._mode())
        if self._rescue_due:
            await self._rerouter.rescue(self._mode(), self._channels.keys())
            self._rescue_due = False
        return await self._claimer.claim()

    async def _replan(self) -> None:
        """The re-plan requested, or owed by a reload of the routes in force and left unfinished."""
        if self._resume_due:
            owed = await self._rerouter.resume(started=not self._resumed)
            self._replan_due = owed or self._replan_due
            self._resume_due, self._resumed = False, True
        if self._replan_due:
            self._replan_due = False
            try:
                # waiting for a send slot they are in flight, which the walk leaves on their old plans
                await self._claimer.release_waiting(reloaded)
                await self._rerouter.replan(self._mode())
            except (StoreUnavailable, asyncio.CancelledError):
                self._replan_due = True  # the store failed (or a stop): the next pass tries again
                raise
            except Exception:
                # A bug in the walk must not stop delivery: tried again every pass (and, its
                # marker owed, at every start) it would stop every send for good.
                log.exception(
                    "re-planning the unsent notifications failed; they keep their plans until the "
                    "next reload or change of mode",
                    extra={"event": "routing.replan_failed"},
                )

    async def _release_expired(self) -> None:
        """Once per poll: claims whose lease ran out (a dead node's, a stuck send's) become pending.

        Whatever their mode: one claimed before a mode change is then re-planned by the sweep,
        rather than waiting for a node to restart (and an acknowledged one is superseded).
        """
        if self._clock.monotonic() - self._released_at < self._settings.poll_s:
            return
        self._released_at = self._clock.monotonic()
        if await self._store.release_expired(self._clock.now()):
            self._sweep_due = True

    def _pace_from(self, pass_started: float) -> float:
        """When the pause between passes starts counting.

        Under a burst every accepted request wakes the loop; one pass per few milliseconds claims
        the same work with a fraction of the store round trips. The pause counts from the last
        pass that claimed something, so the first quiet pass (a send just finished) does not delay
        a notification accepted right after it; repeated empty passes count from their own start.
        """
        last_claim_at = self._claimer.last_claim_at
        self._empty_passes = 0 if last_claim_at >= pass_started else self._empty_passes + 1
        return last_claim_at if self._empty_passes <= 1 else pass_started

    async def _idle(self, wait_s: float, pace_from: float) -> None:
        if wait_s > 0:
            try:
                await asyncio.wait_for(self._wake.wait(), wait_s)
            except TimeoutError:
                self._sweep_due = True
        self._wake.clear()
        rest = MIN_PASS_INTERVAL_S - (self._clock.monotonic() - pace_from)
        if rest > 0 and not self._stopping:
            await asyncio.sleep(rest)

    async def _drain(self) -> None:
        try:
            await asyncio.wait_for(self._claimer.release_waiting(), self._settings.drain_grace_s)
        except TimeoutError:  # the store cannot record: a restart releases every claim anyway
            log.error(
                "claims waiting for a send slot could not be put back within %gs; the next start "
                "releases them",
                self._settings.drain_grace_s,
                extra={"event": "dispatch.drain_timeout"},
            )
        await self._slots.drain(self._settings.drain_grace_s)
