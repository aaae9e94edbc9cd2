"""Telling people about the provider: each meaningful transition becomes a notification.

The announcement goes through the same outbox and routing policy as everything else, so ops hear
about an outage through the backup channels the policy names for that severity (email is what is
down), and about the recovery by email again. ``suspect`` is not announced: it is routine noise;
nor is ``recovering``, nor a relapse from it back to ``outage`` (see :data:`ROUTINE`).

One outage, one thread: the announcement that opens an outage is remembered, and every later
announcement until the recovery follows it (``labels.follows``), so the Slack channel posts them
in its thread. The recovery ("outage over") also goes, in that thread, to each backup channel that
delivered the opening announcement and that the recovery's own plan (by email, usually) leaves
out: whoever heard "down" on Slack hears "back" there. After a restart the opening is found again
from the stored transitions and notifications. See docs/recovery.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon.clock import Clock
from daemon.core.catchup import last_outage
from daemon.core.health import Transition
from daemon.core.model import (
    FOLLOWS_LABEL,
    OWN_SOURCE,
    DeliveryState,
    Mode,
    Notification,
    Plan,
    ProviderState,
    Severity,
)
from daemon.ids import new_id
from daemon.intake.accept import Acceptor, Submission
from daemon.store.base import Store, StoreError
from daemon.store.values import Accepted, ListFilter, NewNotification, NotificationView

log = logging.getLogger(__name__)
#: an announcement the store could not take is tried again: 1, 2, 4... s apart, at most 30 s, 8 times
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0
RETRY_ATTEMPTS = 8
#: how long a stop waits for announcements still being queued
DRAIN_GRACE_S = 5.0
#: a start, or a node elected, announces the last stored transition again when it is more recent
#: than this: the node that stored it may have stopped before queueing its announcement
RESUME_HORIZON = timedelta(days=1)

SOURCE = OWN_SOURCE
EVENT = "provider.transition"
#: how loud each state is; states missing here are not announced
SEVERITY = {
    ProviderState.OUTAGE: Severity.CRITICAL,
    ProviderState.HEALTHY: Severity.HIGH,
    ProviderState.UNKNOWN: Severity.HIGH,
    ProviderState.CREDENTIALS: Severity.HIGH,
    ProviderState.FLAPPING: Severity.HIGH,
}
HEADLINES = {
    ProviderState.OUTAGE: "{name} is DOWN: critical notifications now go through backup channels",
    ProviderState.HEALTHY: "{name} is back: mail flows again, held notifications are being sent",
    ProviderState.UNKNOWN: "backchannel cannot tell whether {name} works: its own network looks down",
    ProviderState.CREDENTIALS: "{name} refuses backchannel's credentials: renew them (not an outage)",
    ProviderState.FLAPPING: "{name} keeps failing and recovering: routing stays on the backup channels",
}
#: changes that are no news: a blip (suspect -> healthy), and a relapse before a recovery was
#: confirmed (recovering -> outage: routing never left the outage side and "recovering" was not
#: announced, so a provider whose checks pass now and then would be announced DOWN again each time)
ROUTINE = frozenset(
    {(ProviderState.SUSPECT, ProviderState.HEALTHY), (ProviderState.RECOVERING, ProviderState.OUTAGE)}
)
#: announced states that open an outage thread
OPENING = frozenset({ProviderState.OUTAGE, ProviderState.FLAPPING})
#: stored times come back within this of the live ones (SQLite keeps float seconds)
_SAME_INSTANT = timedelta(milliseconds=1)


@dataclass
class _Opening:
    """The announcement that opened the current outage: its key now, its id once accepted."""

    key: str
    id: str | None = None


class Announcer:
    def __init__(
        self, acceptor: Acceptor, provider_name: str, store: Store | None = None, clock: Clock | None = None
    ) -> None:
        self._acceptor = acceptor
        self._name = provider_name
        self._store = store
        self._clock = clock
        self._opening: _Opening | None = None
        #: the latest transition this node has announced, or resumed
        self._latest: datetime | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def elected(self) -> None:
        """This node now leads (or starts alone): an outage it announced before another node led
        may have ended since, so a new one is not threaded under it; and the last stored
        transition is announced unless it was (see :meth:`_resume`)."""
        self._opening = None
        self._spawn(self._resume())

    def transition(self, transition: Transition, *, resumed: bool = False) -> None:
        """A monitor listener: queue the announcement without holding up the monitor."""
        self._latest = transition.at if self._latest is None else max(self._latest, transition.at)
        severity = SEVERITY.get(transition.to_state)
        if severity is None or (transition.from_state, transition.to_state) in ROUTINE:
            return
        submission = self._submission(transition, severity)
        opening = self._opening
        if transition.to_state == ProviderState.HEALTHY:
            self._opening = None
            self._spawn(self._recovered(submission, transition, opening, resumed))
            return
        if opening is not None:
            submission = _following(submission, opening.key)
        elif transition.to_state in OPENING:
            opening = self._opening = _Opening(_key(submission))
        self._spawn(self._accept(submission, opening, resumed))

    async def _resume(self) -> None:
        """Announce the last stored transition again: the node that stored it (this one before a
        restart, or a leader since gone) may have stopped between storing it and queueing its
        announcement, a window ``kill -9`` or a lost host can hit. Its key makes the repeat of an
        announcement already queued a no-op, and an outage's opening found so threads this node's
        later announcements under it."""
        if self._store is None or self._clock is None:
            return
        try:
            events = (await self._store.provider(events=1, checks=0)).events
        except StoreError as exc:
            log.error(
                "could not read the last transition to announce: %s", exc, extra={"event": "announce.failed"}
            )
            return
        if not events or self._clock.now() - events[0].at > RESUME_HORIZON:
            return
        if self._latest is not None and self._latest >= events[0].at:
            return  # this node has announced it, or a newer one, meanwhile
        self.transition(events[0], resumed=True)

    def _submission(self, transition: Transition, severity: Severity) -> Submission:
        at = transition.at.isoformat()
        return Submission(
            severity=severity,
            subject=HEADLINES[transition.to_state].format(name=self._name),
            body=f"{transition.from_state.value} -> {transition.to_state.value} at {at}\n"
            f"Why: {transition.cause}",
            source=SOURCE,
            labels={"event": EVENT, "state": transition.to_state.value},
            idempotency_key=f"transition:{at}:{transition.to_state.value}",
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, submission: Submission, opening: _Opening | None, resumed: bool) -> None:
        async def queue() -> Accepted:
            (accepted,) = await self._acceptor.accept([submission])
            return accepted

        if (accepted := await _retrying(queue)) is None:
            return
        _resumed(submission, accepted, resumed)
        if opening is not None and opening.key == _key(submission):
            opening.id = accepted.id

    async def _recovered(
        self, submission: Submission, transition: Transition, opening: _Opening | None, resumed: bool
    ) -> None:
        """Announce the recovery in the outage's thread, on the channels that announced the outage
        (tried again as a whole if the store fails: each part is queued once by its key)."""

        async def queue() -> Accepted:
            opened = await self._opened(transition, opening)
            recovery = (
                submission if opened is None else _following(submission, opened.notification.idempotency_key)
            )
            (accepted,) = await self._acceptor.accept([recovery])
            if opened is not None and self._store is not None:
                await self._echo(recovery, accepted.id, opened, self._store)
            return accepted

        if (accepted := await _retrying(queue)) is not None:
            _resumed(submission, accepted, resumed)

    async def _opened(self, transition: Transition, opening: _Opening | None) -> NotificationView | None:
        """The opening announcement of the outage ``transition`` ends, with its deliveries."""
        if self._store is None:
            return None
        if opening is not None and opening.id is not None:
            return await self._store.notification(opening.id)
        outage = last_outage(list(reversed((await self._store.provider(events=500, checks=0)).events)))
        if outage is None or abs(outage.ended_at - transition.at) > _SAME_INSTANT:
            return None  # e.g. unknown -> healthy while healthy: no outage ended
        key = None if opening is None else opening.key
        # its key, made from the transition that opened the outage: one lookup, where the search
        # below reads every notification since the outage began (a restart after it does too)
        at = outage.started_at.astimezone(UTC).isoformat()
        for candidate in [key] if key is not None else [f"transition:{at}:{s.value}" for s in OPENING]:
            if (found := await self._store.by_key(candidate)) is not None:
                return await self._store.notification(found)
        return await self._find_opening(self._store, outage.started_at - timedelta(seconds=1), key)

    async def _find_opening(self, store: Store, since: datetime, key: str | None) -> NotificationView | None:
        """The earliest opening announcement created since ``since`` (the one with ``key`` if known)."""
        found, before = None, None
        while page := await store.search(ListFilter(since=since, before=before, limit=200)):
            for view in page:
                n = view.notification
                opens = n.source == SOURCE and n.labels.get("event") == EVENT
                if opens and n.labels.get("state") in OPENING and key in (None, n.idempotency_key):
                    found = view  # pages run newest first: keep going to the earliest
            before = page[-1].notification.id
        return found

    async def _echo(
        self, submission: Submission, recovery_id: str, opened: NotificationView, store: Store
    ) -> None:
        """One copy of the recovery per channel that delivered the opening and the recovery skips."""
        recovery = await store.notification(recovery_id)
        skipped = set(recovery.plan) if recovery is not None else set()
        channels = dict.fromkeys(
            d.channel
            for d in opened.deliveries
            if d.state == DeliveryState.DELIVERED and d.channel not in skipped
        )
        if not channels:
            return
        now = self._clock.now() if self._clock is not None else opened.notification.created_at
        await store.accept([_copy(submission, channel, now) for channel in channels], now)

    async def drain(self, grace_s: float = DRAIN_GRACE_S) -> None:
        """Wait for the announcements being queued; one still retrying after ``grace_s`` (the store
        down at shutdown) is given up, logged: the stop is not held up for it."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            log.error(
                "%d announcements not queued before the stop",
                len(pending),
                extra={"event": "announce.failed"},
            )
            await asyncio.gather(*pending, return_exceptions=True)


async def _retrying(queue: Callable[[], Awaitable[Accepted]]) -> Accepted | None:
    """``queue()``, tried again while the store fails: 1, 2, 4... s apart, ``RETRY_ATTEMPTS`` times
    in all; None once given up (logged each time)."""
    delay = RETRY_FIRST_S
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            return await queue()
        except StoreError as exc:  # a blip: the transition is stored, its announcement is due
            log.error(
                "could not queue the announcement (attempt %d of %d): %s",
                attempt,
                RETRY_ATTEMPTS,
                exc,
                extra={"event": "announce.failed"},
            )
            if attempt < RETRY_ATTEMPTS:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
    return None


def _resumed(submission: Submission, accepted: Accepted, resumed: bool) -> None:
    if resumed and not accepted.duplicate:
        log.warning(
            "announced a transition stored without its announcement: %s",
            submission.subject,
            extra={"event": "announce.resumed", "idempotency_key": submission.idempotency_key},
        )


def _key(submission: Submission) -> str:
    assert submission.idempotency_key is not None
    return submission.idempotency_key


def _following(submission: Submission, key: str) -> Submission:
    return replace(submission, labels={**submission.labels, FOLLOWS_LABEL: key})


def _copy(submission: Submission, channel: str, now: datetime) -> NewNotification:
    """The recovery for one channel, with a one-step plan in both modes (as a drill's)."""
    notification = Notification(
        id=new_id(now),
        idempotency_key=f"{_key(submission)}:{channel}",
        created_at=now,
        severity=submission.severity,
        subject=submission.subject,
        body=submission.body,
        source=SOURCE,
        labels=dict(submission.labels),
    )
    plans: dict[Mode, Plan] = {
        mode: Plan(route="announce", mode=mode, steps=(channel,)) for mode in ("healthy", "outage")
    }
    return NewNotification(notification, plans, pinned=True)
