"""The dispatcher: claims due deliveries, sends them, records every outcome.

The outbox row is the truth: a delivery is claimed (``in_flight``) before it is sent and its
outcome is committed after, so a crash between the two re-sends it on restart (at least once;
the notification id travels as the idempotency key so receivers can drop the repeat).
One failing channel never holds up the others: each has its own cap on sends in flight.

A channel with a digest policy sends one message at a time instead: before each send slot it
claims what is due into its :class:`~daemon.digesting.Digesting`, which decides whether the slot
carries one delivery or a digest of many (docs/digests.md). Each carried delivery keeps its own
outcome, so a failed digest leaves every one of them with its own retry (at one shared time, so
they come back together as the same digest).

A bug before the send (a renderer or a digest that raises) is recorded for the delivery it hit,
as a retry and in the end a failure (``delivery.bug``): the loop never dies of it and no claim is
left in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from channels.base import Channel, ChannelError, OutboundMessage, Receipt
from daemon.clock import Clock
from daemon.core.backoff import RetryPolicy
from daemon.core.model import Mode, ProviderState
from daemon.digesting import Broken, Digesting, DigestPolicy, DigestSend
from daemon.outcomes import (
    acknowledged_meanwhile,
    delivered,
    delivered_in_digest,
    not_delivered,
    not_prepared,
    released,
)
from daemon.rendering import Renderer
from daemon.rerouting import Rerouter
from daemon.store.base import Claimed, Outcome, Store, StoreError, StoreUnavailable

log = logging.getLogger(__name__)


#: a notification that follows up another (a resolved alert) names the other's idempotency key here
FOLLOWS_LABEL = "follows"

#: the shortest time between two looks at the outbox
MIN_PASS_INTERVAL_S = 0.005
#: a channel's deliveries sending or recording their outcome, at most, per send it may have in flight
RECORDING_PER_SLOT = 2


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: int = 4
    #: failures of this channel that implicate the provider feed health tracking
    primary: bool = False
    #: bursts past the channel's pace become digests; None sends every delivery on its own
    digest: DigestPolicy | None = None


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    poll_s: float = 1.0
    lease_s: float = 300.0
    drain_grace_s: float = 10.0


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
    ) -> None:
        self._store = store
        self._channels = dict(channels)
        self._policies = dict(policies)
        self._clock = clock
        self._state = state
        self._mode = mode
        self._rerouter = rerouter
        self._on_primary_failure = on_primary_failure
        self._settings = settings or DispatchSettings()
        self._rand = rand
        self._renderer = renderer or Renderer(state)
        self._digesting = {
            name: Digesting(name, policy.digest, self._renderer, state)
            for name, policy in self._policies.items()
            if policy.digest is not None and name in self._channels
        }
        self._wake = asyncio.Event()
        self._in_flight: dict[str, set[asyncio.Task[None]]] = {name: set() for name in self._channels}
        #: of those, the ones done sending and recording their outcome (not counted as sends)
        self._recording: dict[str, int] = dict.fromkeys(self._channels, 0)
        self._stopping = False
        self._sweep_due = True
        self._replan_due = False
        self._pass_listeners: list[Callable[[], None]] = []
        self._outcome_listeners: list[Callable[[str, Claimed, Outcome, ChannelError | None], None]] = []
        #: monotonic time of the loop's last completed pass (the watchdog's evidence of progress)
        self.last_pass_at = clock.monotonic()
        self._last_claim_at = float("-inf")
        self._released_at = float("-inf")
        self._empty_passes = 0

    def on_outcome(self, listener: Callable[[str, Claimed, Outcome, ChannelError | None], None]) -> None:
        """Called after each send's outcome is recorded (channel, delivery, outcome, the error if any)."""
        self._outcome_listeners.append(listener)

    def on_pass(self, listener: Callable[[], None]) -> None:
        """Called after every completed pass over the outbox (the watchdog's evidence of progress)."""
        self._pass_listeners.append(listener)

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

    @property
    def in_flight(self) -> int:
        return sum(len(tasks) for tasks in self._in_flight.values())

    async def run(self) -> None:
        """Dispatch until :meth:`stop`; then wait for in-flight sends within the grace period."""
        await self._store.release_claims(self._clock.now())
        while not self._stopping:
            started = self._clock.monotonic()
            try:
                wait_s = await self._pass()
            except StoreUnavailable as exc:
                # Intake answers 503 meanwhile; sends resume when the store can commit again.
                log.error("the outbox cannot be read or claimed: %s", exc, extra={"event": "store.failed"})
                wait_s = self._settings.poll_s
            self.last_pass_at = self._clock.monotonic()
            for listener in self._pass_listeners:
                listener()
            await self._idle(wait_s, self._pace_from(started))
        await self._drain()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _pass(self) -> float:
        """Claim what is due for every channel with room; return how long until more is due."""
        await self._release_expired()
        if self._replan_due:
            self._replan_due = False
            await self._rerouter.replan(self._mode())
        if self._sweep_due:
            self._sweep_due = False
            await self._rerouter.sweep(self._mode())
        now = self._clock.now()
        lease_until = now + timedelta(seconds=self._settings.lease_s)
        wait_s = self._settings.poll_s
        due_now: set[str] = set()
        for name, due_at in (await self._store.due()).items():
            free = self._free(name) if name in self._channels else 0
            if due_at > now:
                wait_s = min(wait_s, (due_at - now).total_seconds())
            elif name in self._digesting:
                due_now.add(name)
            elif free > 0:
                for claimed in await self._store.claim(name, free, now, lease_until):
                    self._start(name, claimed)
        for name, digesting in self._digesting.items():
            if not self._in_flight[name]:
                await self._next_slot(digesting, name in due_now, now, lease_until)
        return wait_s

    def _free(self, name: str) -> int:
        """Sends the channel may start now.

        ``concurrency`` caps the sends in flight, not their bookkeeping: a send done whose outcome
        waits for its commit and sync (about a millisecond, more under load) frees its slot, else
        the disk, not the receiver, would set the pace. Sending and recording together stay within
        RECORDING_PER_SLOT times ``concurrency``.
        """
        concurrency = self._policies[name].concurrency
        tasks, recording = len(self._in_flight[name]), self._recording[name]
        return max(0, min(concurrency - (tasks - recording), concurrency * RECORDING_PER_SLOT - tasks))

    async def _next_slot(self, digesting: Digesting, due: bool, now: datetime, lease_until: datetime) -> None:
        """A digest-enabled channel with nothing in flight: claim what is due, send what comes next."""
        name = digesting.name
        broken: list[Broken] = []
        if due and digesting.room > 0:
            broken = digesting.add(await self._store.claim(name, digesting.room, now, lease_until))
        send = digesting.next()
        if isinstance(send, Broken):
            broken.append(send)
        elif isinstance(send, DigestSend):
            self._spawn(name, self._deliver_digest(name, send), f"digest-{send.digest.id}")
        elif send is not None and await self._acknowledged_meanwhile(send):
            outcome = acknowledged_meanwhile(name, send, self._clock.now())
            self._spawn(name, self._record([outcome]), f"acknowledged-{send.delivery.id}")
        elif send is not None:
            self._start(name, send)
        if broken:
            self._spawn(name, self._record_broken(name, broken, now), f"broken-{name}")

    async def _acknowledged_meanwhile(self, claimed: Claimed) -> bool:
        """An escalation step acknowledged while it waited for its send slot (during a burst)."""
        if claimed.ack_code is None:
            return False
        try:
            return bool(await self._store.acknowledged([claimed.notification.id]))
        except StoreError:  # cannot tell: paging once too often beats not paging
            return False

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

    def _start(self, name: str, claimed: Claimed) -> None:
        self._spawn(name, self._deliver(name, claimed), f"deliver-{claimed.delivery.id}")

    def _spawn(self, name: str, work: Coroutine[None, None, None], task_name: str) -> None:
        self._last_claim_at = self._clock.monotonic()
        task = asyncio.create_task(work, name=task_name)
        tasks = self._in_flight[name]
        tasks.add(task)
        task.add_done_callback(lambda t: self._finished(tasks, t))

    def _finished(self, tasks: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        self._wake.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("delivery task crashed", exc_info=exc, extra={"event": "delivery.crashed"})

    def _pace_from(self, pass_started: float) -> float:
        """When the pause between passes starts counting.

        Under a burst every accepted request wakes the loop; one pass per few milliseconds claims
        the same work with a fraction of the store round trips. The pause counts from the last
        pass that claimed something, so the first quiet pass (a send just finished) does not delay
        a notification accepted right after it; repeated empty passes count from their own start.
        """
        self._empty_passes = 0 if self._last_claim_at >= pass_started else self._empty_passes + 1
        return self._last_claim_at if self._empty_passes <= 1 else pass_started

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
            await asyncio.wait_for(self._release_waiting(), self._settings.drain_grace_s)
        except TimeoutError:  # the store cannot record: a restart releases every claim anyway
            log.error(
                "claims waiting for a send slot could not be put back within %gs; the next start "
                "releases them",
                self._settings.drain_grace_s,
                extra={"event": "dispatch.drain_timeout"},
            )
        tasks = [t for group in self._in_flight.values() for t in group]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._settings.drain_grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            log.warning(
                "%d sends still in flight at shutdown stay in the outbox",
                len(pending),
                extra={"event": "dispatch.drain_timeout", "count": len(pending)},
            )

    async def _release_waiting(self) -> None:
        waiting = [c for digesting in self._digesting.values() for c in digesting.release()]
        if waiting:
            await self._record(released(waiting, self._clock.now()))

    async def _deliver(self, name: str, claimed: Claimed) -> None:
        started_at = self._clock.now()
        try:
            message = await self._prepare(name, claimed)
        except Exception as exc:  # a bug must not leave the claim in flight: recorded for this delivery
            await self._record_broken(name, [Broken((claimed,), exc)], started_at)
            return
        receipt, error = await self._send(name, message)
        if error is None:
            outcomes = [self._success(name, claimed, receipt, started_at)]
        else:
            outcomes = await self._failures(name, [claimed], error, started_at)
        was_full = self._free(name) == 0
        self._recording[name] += 1
        if was_full and self._free(name) > 0:
            self._wake.set()  # the channel was full of sends: a slot is free now
        try:
            await self._record(outcomes)
        finally:
            self._recording[name] -= 1
        self._recorded(name, [(claimed, outcomes[0])], error)

    async def _prepare(self, name: str, claimed: Claimed) -> OutboundMessage:
        message = self._renderer.render(name, claimed)
        follows = claimed.notification.labels.get(FOLLOWS_LABEL)
        if follows:
            message = replace(message, thread=await self._store.thread_of(follows, name))
        return message

    async def _record_broken(self, name: str, broken: Sequence[Broken], started_at: datetime) -> None:
        retry, now = self._policies[name].retry, self._clock.now()
        results = [
            (c, not_prepared(name, c, b.error, started_at, now, retry=retry, rand=self._rand()))
            for b in broken
            for c in b.claimed
        ]
        await self._record([outcome for _, outcome in results])
        self._recorded(name, results, ChannelError("internal error"))

    async def _deliver_digest(self, name: str, send: DigestSend) -> None:
        """One message for many deliveries; each is recorded on its own, naming the digest."""
        started_at = self._clock.now()
        receipt, error = await self._send(name, send.message)
        if receipt is not None:
            now = self._clock.now()
            outcomes = delivered_in_digest(name, send.digest.id, send.carried, receipt, started_at, now)
        else:
            assert error is not None
            outcomes = await self._failures(name, send.carried, error, started_at)
        await self._record(outcomes)
        self._recorded(name, list(zip(send.carried, outcomes, strict=True)), error)

    async def _send(
        self, name: str, message: OutboundMessage
    ) -> tuple[Receipt, None] | tuple[None, ChannelError]:
        try:
            return await self._channels[name].send(message), None
        except ChannelError as exc:
            return None, exc
        except Exception as exc:
            # An adapter bug must not lose the notification nor silence other channels.
            log.exception(
                "channel %s raised unexpectedly", name, extra={"event": "delivery.bug", "channel": name}
            )
            return None, ChannelError(f"internal error: {exc!r}")

    def _recorded(
        self, name: str, results: list[tuple[Claimed, Outcome]], error: ChannelError | None
    ) -> None:
        for claimed, outcome in results:
            for listener in self._outcome_listeners:
                listener(name, claimed, outcome, error)
        if any(claimed.delivery.mode != self._mode() for claimed, _ in results):
            self.request_sweep()

    async def _record(self, outcomes: Sequence[Outcome]) -> None:
        """Outcomes must be written before anything else happens to their deliveries: keep trying."""
        delay = self._settings.poll_s
        while True:
            try:
                await self._store.record(outcomes, self._clock.now())
                return
            except StoreUnavailable as exc:
                log.error(
                    "cannot record a delivery outcome, retrying: %s", exc, extra={"event": "store.failed"}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _success(
        self, name: str, claimed: Claimed, receipt: Receipt | None, started_at: datetime, *, via: str = ""
    ) -> Outcome:
        assert receipt is not None
        return delivered(name, claimed, receipt, started_at, self._clock.now(), via=via)

    async def _failures(
        self, name: str, claimed: Sequence[Claimed], exc: ChannelError, started_at: datetime
    ) -> list[Outcome]:
        """One failed send; what it carried shares one retry time, so a digest comes back whole."""
        policy = self._policies[name]
        provider_fault = policy.primary and exc.service_fault
        if provider_fault:
            try:
                await self._on_primary_failure(exc.reason)
            except StoreError as store_exc:
                # The health signal is lost, not the delivery: its outcome must still be recorded.
                log.error(
                    "could not feed a provider fault to health tracking: %s",
                    store_exc,
                    extra={"event": "store.failed"},
                )
        now, rand = self._clock.now(), self._rand()
        backoff = max(c.delivery.attempts for c in claimed)
        return [
            not_delivered(
                name,
                c,
                exc,
                started_at,
                now,
                retry=policy.retry,
                provider_fault=provider_fault,
                rand=rand,
                backoff_attempts=backoff,
            )
            for c in claimed
        ]
