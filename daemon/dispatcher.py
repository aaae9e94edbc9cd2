"""The dispatcher: claims due deliveries, sends them, records every outcome.

The outbox row is the truth: a delivery is claimed (``in_flight``) before it is sent and its
outcome is committed after, so a crash between the two re-sends it on restart (at least once;
the notification id travels as the idempotency key so receivers can drop the repeat).
One failing channel never holds up the others: each has its own cap on sends in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from channels.base import Channel, ChannelError, Receipt
from daemon.clock import Clock
from daemon.core.backoff import RetryPolicy, exhausted, retry_delay
from daemon.core.model import Mode, ProviderState
from daemon.rendering import Renderer
from daemon.rerouting import Rerouter
from daemon.store.base import Claimed, Outcome, Store, StoreUnavailable

log = logging.getLogger(__name__)


#: a notification that follows up another (a resolved alert) names the other's idempotency key here
FOLLOWS_LABEL = "follows"

#: the shortest time between two looks at the outbox
MIN_PASS_INTERVAL_S = 0.005


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: int = 4
    #: failures of this channel that implicate the provider feed health tracking
    primary: bool = False


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
        self._wake = asyncio.Event()
        self._in_flight: dict[str, set[asyncio.Task[None]]] = {name: set() for name in self._channels}
        self._stopping = False
        self._sweep_due = True
        self._replan_due = False
        self._pass_listeners: list[Callable[[], None]] = []
        self._outcome_listeners: list[Callable[[str, Claimed, Outcome, ChannelError | None], None]] = []
        #: monotonic time of the loop's last completed pass (the watchdog's evidence of progress)
        self.last_pass_at = clock.monotonic()

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
            await self._idle(wait_s, started)
        await self._drain()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _pass(self) -> float:
        """Claim what is due for every channel with room; return how long until more is due."""
        if self._replan_due:
            self._replan_due = False
            await self._rerouter.replan(self._mode())
        if self._sweep_due:
            self._sweep_due = False
            await self._rerouter.sweep(self._mode())
        now = self._clock.now()
        lease_until = now + timedelta(seconds=self._settings.lease_s)
        wait_s = self._settings.poll_s
        for name, due_at in (await self._store.due()).items():
            free = (
                self._policies[name].concurrency - len(self._in_flight[name]) if name in self._channels else 0
            )
            if due_at > now:
                wait_s = min(wait_s, (due_at - now).total_seconds())
            elif free > 0:
                for claimed in await self._store.claim(name, free, now, lease_until):
                    self._start(name, claimed)
        return wait_s

    def _start(self, name: str, claimed: Claimed) -> None:
        task = asyncio.create_task(self._deliver(name, claimed), name=f"deliver-{claimed.delivery.id}")
        tasks = self._in_flight[name]
        tasks.add(task)
        task.add_done_callback(lambda t: self._finished(tasks, t))

    def _finished(self, tasks: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        self._wake.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("delivery task crashed", exc_info=exc, extra={"event": "delivery.crashed"})

    async def _idle(self, wait_s: float, pass_started: float) -> None:
        if wait_s > 0:
            try:
                await asyncio.wait_for(self._wake.wait(), wait_s)
            except TimeoutError:
                self._sweep_due = True
        self._wake.clear()
        # Under a burst every accepted request wakes the loop; one pass per few milliseconds
        # claims the same work with a fraction of the store round trips.
        rest = MIN_PASS_INTERVAL_S - (self._clock.monotonic() - pass_started)
        if rest > 0 and not self._stopping:
            await asyncio.sleep(rest)

    async def _drain(self) -> None:
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

    async def _deliver(self, name: str, claimed: Claimed) -> None:
        started_at = self._clock.now()
        message = self._renderer.render(name, claimed)
        follows = claimed.notification.labels.get(FOLLOWS_LABEL)
        if follows:
            message = replace(message, thread=await self._store.thread_of(follows, name))
        error: ChannelError | None = None
        try:
            receipt = await self._channels[name].send(message)
        except ChannelError as exc:
            error = exc
        except Exception as exc:
            # An adapter bug must not lose the notification nor silence other channels.
            log.exception(
                "channel %s raised unexpectedly", name, extra={"event": "delivery.bug", "channel": name}
            )
            error = ChannelError(f"internal error: {exc!r}")
        if error is None:
            outcome = self._success(name, claimed, receipt, started_at)
        else:
            outcome = await self._failure(name, claimed, error, started_at)
        await self._record(outcome)
        for listener in self._outcome_listeners:
            listener(name, claimed, outcome, error)
        if claimed.delivery.mode != self._mode():
            self.request_sweep()

    async def _record(self, outcome: Outcome) -> None:
        """The outcome must be written before anything else happens to this delivery: keep trying."""
        delay = self._settings.poll_s
        while True:
            try:
                await self._store.record([outcome], self._clock.now())
                return
            except StoreUnavailable as exc:
                log.error(
                    "cannot record a delivery outcome, retrying: %s", exc, extra={"event": "store.failed"}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _success(self, name: str, claimed: Claimed, receipt: Receipt, started_at: datetime) -> Outcome:
        log.info(
            "delivered %s via %s",
            claimed.notification.id,
            name,
            extra={"event": "delivery.sent", "notification_id": claimed.notification.id, "channel": name},
        )
        return Outcome(
            delivery_id=claimed.delivery.id,
            kind="delivered",
            started_at=started_at,
            finished_at=self._clock.now(),
            detail=receipt.detail,
            remote_id=receipt.remote_id,
        )

    async def _failure(self, name: str, claimed: Claimed, exc: ChannelError, started_at: datetime) -> Outcome:
        policy = self._policies[name]
        provider_fault = policy.primary and exc.service_fault
        if provider_fault:
            await self._on_primary_failure(exc.reason)
        now = self._clock.now()
        attempts = claimed.delivery.attempts
        fields = {"event": "delivery.failed", "notification_id": claimed.notification.id, "channel": name}
        # A provider-wide fault is not this message's fault: keep it queued (the outage
        # machinery reroutes it) rather than exhausting its retries and failing it.
        if exc.permanent or (exhausted(policy.retry, attempts) and not provider_fault):
            log.warning("giving up on %s via %s: %s", claimed.notification.id, name, exc.reason, extra=fields)
            return Outcome(claimed.delivery.id, "failed", started_at, now, detail=exc.reason)
        delay = retry_delay(policy.retry, attempts, self._rand(), exc.retry_after_s)
        log.info(
            "retrying %s via %s in %.1fs: %s",
            claimed.notification.id,
            name,
            delay,
            exc.reason,
            extra=fields | {"event": "delivery.retry"},
        )
        return Outcome(
            claimed.delivery.id,
            "retry",
            started_at,
            now,
            detail=exc.reason,
            retry_at=now + timedelta(seconds=delay),
        )
