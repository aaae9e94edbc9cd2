"""One send and what came of it: a claimed delivery (or a digest of many) sent, its outcome recorded.

The dispatcher decides when to send and within which slot; a :class:`Deliverer` renders the
message (threaded under the notification it follows, if any), sends it, turns the receipt or the
channel's error into outcomes (:mod:`daemon.outcomes`) and records them before anything else
happens to those deliveries, retrying while the store is unavailable. Each delivery a digest
carried keeps its own outcome; a failed send gives them one shared retry time, so they come back
together as the same digest.

A bug before the send (a renderer or a digest that raises) is recorded for the delivery it hit,
as a retry and in the end a failure (``delivery.bug``), and an adapter that raises something other
than its channel error counts as a failed send: no claim is left in flight and the other channels
carry on. A failure of a primary channel that implicates the provider feeds health tracking.

An email whose server refused some recipients (or all of it) may call for a follow-up to the
recipients refused for now and, for a relayed smart-host message, a report to its sender
(:mod:`daemon.refusals`):
they are committed before the send's outcome is recorded, so a crash in between repeats the send
(at least once) and never loses them; their keys make the repeat find them committed already.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from channels.base import Channel, ChannelError, OutboundMessage, Receipt, RelaysMail
from daemon.clock import Clock
from daemon.core.model import FOLLOWS_LABEL, Mode
from daemon.digesting import Broken, DigestSend
from daemon.dispatch_policy import ChannelPolicy
from daemon.outcomes import delivered, delivered_in_digest, kept_for_later, not_delivered, not_prepared
from daemon.refusals import Bounces, consequences, made_of
from daemon.rendering import Renderer
from daemon.send_slots import SendSlots
from daemon.store.base import Store, StoreError, StoreUnavailable
from daemon.store.values import Accepted, Claimed, NewNotification, Outcome

log = logging.getLogger("daemon.dispatcher")


class Deliverer:
    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        policies: Mapping[str, ChannelPolicy],
        *,
        clock: Clock,
        mode: Callable[[], Mode],
        slots: SendSlots,
        renderer: Renderer,
        on_primary_failure: Callable[[str], Awaitable[None]],
        on_stale_mode: Callable[[], None],
        poll_s: float,
        rand: Callable[[], float],
        bounces: Bounces | None = None,
    ) -> None:
        self._store = store
        self._channels = channels
        self._policies = policies
        self._clock = clock
        self._mode = mode
        self._slots = slots
        self._renderer = renderer
        self._on_primary_failure = on_primary_failure
        self._on_stale_mode = on_stale_mode
        self._poll_s = poll_s
        self._rand = rand
        self._bounces = bounces or Bounces()
        self._outcome_listeners: list[Callable[[str, Claimed, Outcome, ChannelError | None], None]] = []

    def on_outcome(self, listener: Callable[[str, Claimed, Outcome, ChannelError | None], None]) -> None:
        """Called after each send's outcome is recorded (channel, delivery, outcome, the error if any)."""
        self._outcome_listeners.append(listener)

    async def deliver(self, name: str, claimed: Claimed) -> None:
        started_at = self._clock.now()
        try:
            message = await self._prepare(name, claimed)
        except Exception as exc:  # a bug must not leave the claim in flight: recorded for this delivery
            await self.record_broken(name, [Broken((claimed,), exc)], started_at)
            return
        receipt, error = await self._send(name, message)
        if error is None:
            outcomes = [self._success(name, claimed, receipt, started_at)]
        else:
            outcomes = await self._failures(name, [claimed], error, started_at)
        with self._slots.recording(name):
            await self.accept(self._refusals(name, claimed, error or receipt, outcomes[0]))
            await self.record(outcomes)
        self._recorded(name, [(claimed, outcomes[0])], error)

    def _refusals(
        self, name: str, claimed: Claimed, result: Receipt | ChannelError | None, outcome: Outcome
    ) -> list[NewNotification]:
        """What the server's refusals of a relayed message call for: a follow-up, a report."""
        if result is None:
            return []
        failed = outcome.kind == "failed"
        if failed and any(isinstance(self._channels.get(c), RelaysMail) for c in claimed.then):
            return []  # a later step relays the whole message again; its outcome answers for it
        now = self._clock.now()
        try:
            return consequences(
                name, claimed.notification, result, failed=failed, bounces=self._bounces, now=now
            )
        except Exception as exc:  # a bug here must not keep the outcome from being recorded
            log.error(
                "cannot make the follow-up or report of %s: %r",
                claimed.notification.id,
                exc,
                exc_info=exc,
                extra={"event": "delivery.bug", "notification_id": claimed.notification.id, "channel": name},
            )
            return []

    async def _prepare(self, name: str, claimed: Claimed) -> OutboundMessage:
        message = self._renderer.render(name, claimed)
        follows = claimed.notification.labels.get(FOLLOWS_LABEL)
        if follows:
            message = replace(message, thread=await self._store.thread_of(follows, name))
        return message

    async def record_broken(self, name: str, broken: Sequence[Broken], started_at: datetime) -> None:
        retry, now = self._policies[name].retry, self._clock.now()
        results = [
            (c, not_prepared(name, c, b.error, started_at, now, retry=retry, rand=self._rand()))
            for b in broken
            for c in b.claimed
        ]
        await self.record([outcome for _, outcome in results])
        self._recorded(name, results, ChannelError("internal error"))

    async def deliver_digest(self, name: str, send: DigestSend) -> None:
        """One message for many deliveries; each is recorded on its own, naming the digest."""
        started_at = self._clock.now()
        await self._mark_digest(send)
        receipt, error = await self._send(name, send.message)
        if receipt is not None:
            now = self._clock.now()
            outcomes = delivered_in_digest(name, send.digest.id, send.carried, receipt, started_at, now)
        else:
            assert error is not None
            outcomes = await self._failures(name, send.carried, error, started_at)
        await self.record(outcomes)
        self._recorded(name, list(zip(send.carried, outcomes, strict=True)), error)

    async def _mark_digest(self, send: DigestSend) -> None:
        """Note the digest on its deliveries before it goes out: sent again after a crash or a
        lease taken over, it is the same group under the same id. Not noted (the store failing),
        the send goes on: they would be grouped anew, a duplicate the receiver cannot drop."""
        ids = [c.delivery.id for c in send.carried]
        try:
            await self._store.mark_digest(ids, send.digest.id)
        except StoreError as exc:
            log.warning(
                "digest %s sent without its deliveries noting it: %s",
                send.digest.id,
                exc,
                extra={"event": "digest.unmarked", "digest": send.digest.id},
            )

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
            self._on_stale_mode()

    async def record(self, outcomes: Sequence[Outcome]) -> None:
        """Outcomes must be written before anything else happens to their deliveries: keep trying."""
        await self._keep_trying(
            "record a delivery outcome", lambda: self._store.record(outcomes, self._clock.now())
        )

    async def accept(self, items: Sequence[NewNotification]) -> None:
        """Commit what a send's refusals call for (a follow-up, a report) before its outcome."""
        if not items:
            return
        accepted: list[Accepted] = []

        async def commit() -> None:
            accepted[:] = await self._store.accept(items, self._clock.now())

        await self._keep_trying("commit a relayed message's follow-up or report", commit)
        for item, result in zip(items, accepted, strict=True):
            kind, of = made_of(item.notification)
            to = ", ".join(item.notification.recipients)
            fields = {"event": f"relay.{kind}", "notification_id": of, "duplicate": result.duplicate}
            log.info("%s of %s to %s: %s", kind, of, to, result.id, extra=fields)

    async def _keep_trying(self, what: str, write: Callable[[], Coroutine[None, None, None]]) -> None:
        delay = self._poll_s
        while True:
            try:
                await write()
                return
            except StoreUnavailable as exc:
                log.error("cannot %s, retrying: %s", what, exc, extra={"event": "store.failed"})
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
        if provider_fault and not exc.local:  # our own network failing says nothing of the provider
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
                keep_queued=provider_fault or (policy.primary and kept_for_later(exc, c, now)),
                rand=rand,
                backoff_attempts=backoff,
            )
            for c in claimed
        ]
