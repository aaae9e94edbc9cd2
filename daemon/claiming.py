"""The dispatcher's claiming pass: what is due, claimed for each channel with room, its send started.

A channel without a digest policy claims as many due deliveries as it has free send slots
(:mod:`daemon.send_slots`) and starts a send for each (:mod:`daemon.delivering`). A channel with a
digest policy sends one message at a time instead: before each send slot it claims what is due
into its :class:`~daemon.digesting.Digesting`, which decides whether the slot carries one delivery
or a digest of many (docs/digests.md). Each carried delivery keeps its own outcome, so a failed
digest leaves every one of them with its own retry (at one shared time, so they come back together
as the same digest). A delivery due on a channel this node does not have waits out a grace, then
its step fails. The loop around the passes is :mod:`daemon.dispatcher`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime, timedelta

from channels.base import Channel
from daemon.clock import Clock
from daemon.core.model import Mode, ProviderState
from daemon.delivering import Deliverer
from daemon.digesting import Broken, Digesting, DigestSend
from daemon.dispatch_policy import ChannelPolicy, DispatchSettings
from daemon.outcomes import acknowledged_meanwhile, released, replanned, unconfigured
from daemon.rendering import Renderer
from daemon.send_slots import SendSlots
from daemon.store.base import Store, StoreError
from daemon.store.values import Claimed, Outcome

log = logging.getLogger("daemon.dispatcher")

#: how long a delivery for a channel this node does not have waits before its step fails: another
#: node of a cluster that has it (a configuration rolled out one node at a time) claims it meanwhile
UNCONFIGURED_GRACE = timedelta(minutes=10)
UNCONFIGURED_BATCH = 200
#: how claims put back unsent are recorded (:func:`~daemon.outcomes.released`, ``reloaded``)
Unsent = Callable[[Sequence[Claimed], datetime], list[Outcome]]


class Claimer:
    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        digesting: Mapping[str, Digesting],
        *,
        clock: Clock,
        mode: Callable[[], Mode],
        slots: SendSlots,
        deliverer: Deliverer,
        settings: DispatchSettings,
        on_stale_mode: Callable[[], None],
    ) -> None:
        self._store = store
        self._channels = channels
        self._digesting = digesting
        self._clock = clock
        self._mode = mode
        self._slots = slots
        self._deliverer = deliverer
        self._settings = settings
        self._on_stale_mode = on_stale_mode
        #: monotonic time of the last send started (the dispatcher paces its passes by it)
        self.last_claim_at = float("-inf")

    @property
    def waiting(self) -> int:
        """Claims waiting for a digest-enabled channel's next send slot."""
        return sum(d.policy.max_items - d.room for d in self._digesting.values())

    async def claim(self) -> float:
        """Claim what is due for every channel with room; return how long until more is due."""
        now = self._clock.now()
        lease_until = now + timedelta(seconds=self._settings.lease_s)
        wait_s = self._settings.poll_s
        due_now: set[str] = set()
        for name, due_at in (await self._store.due()).items():
            if name not in self._channels:
                wait_s = min(wait_s, await self._fail_unconfigured(name, due_at, now))
                continue
            free = self._slots.free(name)
            if due_at > now:
                wait_s = min(wait_s, (due_at - now).total_seconds())
            elif name in self._digesting:
                due_now.add(name)
            elif free > 0:
                for claimed in await self._store.claim(name, free, now, lease_until):
                    self._start(name, claimed)
        for name, digesting in self._digesting.items():
            if self._slots.idle(name):
                await self._next_slot(digesting, name in due_now, now, lease_until)
        return wait_s

    async def _next_slot(self, digesting: Digesting, due: bool, now: datetime, lease_until: datetime) -> None:
        """A digest-enabled channel with nothing in flight: claim what is due, send what comes next."""
        name = digesting.name
        stale = digesting.stale(self._mode())
        if stale:  # the mode changed while they waited: the sweep re-plans them before more claims
            await self._deliverer.record(replanned(stale, now))
            self._on_stale_mode()
            return
        await self._renew(digesting, now, lease_until)
        broken: list[Broken] = []
        if due and digesting.room > 0:
            claimed = await self._store.claim(name, digesting.room, now, lease_until)
            broken = digesting.add(claimed, lease_until)
        send = digesting.next()
        if isinstance(send, Broken):
            broken.append(send)
        elif isinstance(send, DigestSend):
            self._spawn(name, self._deliverer.deliver_digest(name, send), f"digest-{send.digest.id}")
        elif send is not None and await self._acknowledged_meanwhile(send):
            outcome = acknowledged_meanwhile(name, send, self._clock.now())
            self._spawn(name, self._deliverer.record([outcome]), f"acknowledged-{send.delivery.id}")
        elif send is not None:
            self._start(name, send)
        if broken:
            self._spawn(name, self._deliverer.record_broken(name, broken, now), f"broken-{name}")

    async def _renew(self, digesting: Digesting, now: datetime, lease_until: datetime) -> None:
        """Renew the leases of the claims waiting past half their lease: one that ran out would be
        pending again, claimed again and sent twice."""
        due = digesting.expiring(now + timedelta(seconds=self._settings.lease_s / 2))
        if not due:
            return
        lost = digesting.renewed(due, await self._store.renew(due, now, lease_until), lease_until)
        if lost:
            log.warning(
                "%d claims waiting for a send slot on %s had run out of lease: left to the outbox",
                len(lost),
                digesting.name,
                extra={"event": "dispatch.lease_lost", "channel": digesting.name, "count": len(lost)},
            )

    async def _fail_unconfigured(self, name: str, due_at: datetime, now: datetime) -> float:
        """Fail the steps due for longer than the grace on a channel not configured here (a plan
        backchannel made itself keeps its steps: a drill's, a recovery copy's); return how long
        until the next one's grace runs out."""
        if due_at + UNCONFIGURED_GRACE > now:
            return (due_at + UNCONFIGURED_GRACE - now).total_seconds()
        failed = await self._store.fail_stranded(
            name, now - UNCONFIGURED_GRACE, UNCONFIGURED_BATCH, unconfigured(name), now
        )
        if failed:
            log.error(
                "failed %d deliveries via %s: the channel is not configured",
                failed,
                name,
                extra={"event": "delivery.unconfigured", "channel": name, "count": failed},
            )
        return 0.0 if failed == UNCONFIGURED_BATCH else self._settings.poll_s

    async def _acknowledged_meanwhile(self, claimed: Claimed) -> bool:
        """An escalation step acknowledged while it waited for its send slot (during a burst)."""
        if claimed.ack_code is None:
            return False
        try:
            return bool(await self._store.acknowledged([claimed.notification.id]))
        except StoreError:  # cannot tell: paging once too often beats not paging
            return False

    def _start(self, name: str, claimed: Claimed) -> None:
        self._spawn(name, self._deliverer.deliver(name, claimed), f"deliver-{claimed.delivery.id}")

    def _spawn(self, name: str, work: Coroutine[None, None, None], task_name: str) -> None:
        self.last_claim_at = self._clock.monotonic()
        self._slots.spawn(name, work, task_name)

    async def release_waiting(self, unsent: Unsent = released) -> None:
        """At shutdown, or before a re-plan (the routes changed): the claims waiting for a
        digest-enabled channel's send slot become pending."""
        waiting = [c for digesting in self._digesting.values() for c in digesting.release()]
        if waiting:
            await self._deliverer.record(unsent(waiting, self._clock.now()))


def digesting_channels(
    channels: Mapping[str, Channel],
    policies: Mapping[str, ChannelPolicy],
    renderer: Renderer,
    state: Callable[[], ProviderState],
) -> dict[str, Digesting]:
    """A :class:`Digesting` for each configured channel whose policy has a digest."""
    return {
        name: Digesting(name, policy.digest, renderer, state)
        for name, policy in policies.items()
        if policy.digest is not None and name in channels
    }
