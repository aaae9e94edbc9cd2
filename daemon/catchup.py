"""The recovery catch-up: after an outage, each person gets one email of what reached them elsewhere.

On confirmed recovery (the routing mode returns to ``healthy``; the leader alone, in HA), when a
node becomes the leader and at start-up (the last leader may have stopped before queuing it), the
latest ended outage is read from the stored transitions and its backup sends from the
notifications' delivery trails (``search``); a store error is retried with backoff while the node
leads (review finding 8). Sends a status callback later reported undelivered are left out.
Who a send reached is worked out again from the notification's recipients, the directory and the
channel's :class:`~daemon.core.directory.Audience`, as the renderer did when it sent it. Each
person's email is accepted into the outbox with the key ``catchup:<outage start>:<person>``, so a
restart or a second node queues it once; it goes by the primary email channel, held if the
provider fails again first. Smart-host mail that went out through backup channels meanwhile is
relayed by email too (:mod:`daemon.after_outage`). Routes with ``catch_up: false`` are left out of
both. See docs/recovery.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime, timedelta

from daemon.after_outage import owed, relay_copy, relay_key
from daemon.clock import Clock
from daemon.core.backoff import RetryPolicy, retry_delay
from daemon.core.catchup import (
    Outage,
    Sent,
    catch_up_email,
    catch_up_key,
    last_outage,
    received_by,
    withdrawn,
)
from daemon.core.model import OWN_SOURCE, Mode, Notification, Plan, Severity
from daemon.core.routing import Route, walk
from daemon.drills import SOURCE as DRILL_SOURCE
from daemon.ids import new_id
from daemon.rendering import People
from daemon.store.base import Store, StoreError
from daemon.store.values import ListFilter, NewNotification, NotificationView

log = logging.getLogger(__name__)

SOURCE = OWN_SOURCE  # as announcements: the daemon's own word
ROUTE = "catch-up"
#: transitions read to find the outage: enough for an episode with heavy flapping
EVENTS = 500
#: notifications created this long before the outage may still have been sent during it
LOOKBACK = timedelta(days=1)
#: at start-up and election, outages that ended longer ago than this get no (late) catch-up
HORIZON = timedelta(days=1)
PAGE = 200
#: after the recovery's catch-up, once more this much later (sends that settled late)
LATE_S = 300.0
#: smart-host messages relayed per commit (each read back with its bytes, up to the size limit)
RELAY_BATCH = 20
#: a store that fails (a PostgreSQL failover, a locked disk) is tried again every 2 minutes at most,
#: for about as long as a late catch-up is still wanted (HORIZON); a new leader or start-up runs it too
RETRY = RetryPolicy(initial_s=1.0, max_s=120.0, max_attempts=720)


class CatchUp:
    def __init__(
        self,
        store: Store,
        people: People,
        routes: Callable[[], Sequence[Route]],
        primary: Callable[[], frozenset[str]],
        mail: Callable[[], frozenset[str]],
        clock: Clock,
        provider_name: str,
        *,
        in_flight: Callable[[], int] = lambda: 0,
        settle_s: float = 10.0,
        late_s: float = LATE_S,
        leads: Callable[[], bool] = lambda: True,
        on_relayed: Callable[[int], None] = lambda n: None,
        retry: RetryPolicy = RETRY,
    ) -> None:
        self._store = store
        self._people = people
        self._routes = routes
        self._primary = primary
        self._mail = mail
        self._clock = clock
        self._provider = provider_name
        self._in_flight = in_flight
        self._settle_s = settle_s
        self._late_s = late_s
        self._on_relayed = on_relayed
        self._leads = leads
        self._retry = retry
        # runs overlap (a recovery and an election at once): one at a time, the second finds the keys
        self._running = asyncio.Lock()
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        """Shutting down: no more retries (the next start or leader runs the catch-up)."""
        self._stopped.set()

    async def after_recovery(self) -> int:
        """Let sends in flight at the recovery record their outcome (briefly), then :meth:`run`;
        run again :data:`LATE_S` later, while this node still leads, for what was settled only
        then (a send slower than the wait, or one in flight on another node): the keys make the
        second run queue only what the first could not."""
        await self._settled()
        new = await self.run()
        if await self._pause(self._late_s):
            await self._settled()
            new += await self.run()
        return new

    async def _settled(self) -> None:
        """Until this node's sends in flight have recorded their outcome, or ``settle_s``."""
        deadline = self._clock.monotonic() + self._settle_s
        while self._clock.monotonic() < deadline:
            if not self._in_flight():
                break
            await asyncio.sleep(0.05)

    async def run(self, horizon: timedelta | None = None) -> int:
        """Queue the catch-ups of the latest ended outage and relay its owed mail; how many were new.

        Never raises StoreError.

        A store error is logged and the run tried again with backoff, until it succeeds, the
        retries run out, this node no longer leads or the daemon stops.
        """
        attempt = 1
        while True:
            try:
                async with self._running:
                    return await self._run_once(horizon)
            except StoreError as exc:
                again = attempt < self._retry.max_attempts and not self._stopped.is_set()
                log.error(
                    "could not queue the catch-up emails (try %d): %s%s",
                    attempt,
                    exc,
                    "; trying again" if again else "; giving up until the next start or election",
                    extra={"event": "catchup.failed", "attempt": attempt, "retrying": again},
                )
                if not again or not await self._pause(retry_delay(self._retry, attempt, random.random())):
                    return 0
                attempt += 1

    async def _pause(self, delay_s: float) -> bool:
        """Wait ``delay_s`` (less if stopped); whether to try again."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), delay_s)
        if self._stopped.is_set():
            return False
        if not self._leads():
            log.info(
                "catch-up: no longer the leader, the new one runs it", extra={"event": "catchup.handed_over"}
            )
            return False
        return True

    async def _run_once(self, horizon: timedelta | None) -> int:
        provider = await self._store.provider(events=EVENTS, checks=0)
        outage = last_outage(list(reversed(provider.events)))
        if outage is None or (horizon and self._clock.now() - outage.ended_at > horizon):
            return 0
        sends: list[Sent] = []
        mail: list[str] = []  # ids: the messages' bytes are read again one at a time to relay them
        mail_channels = self._mail()
        async for view, route in self._in_scope(outage):
            sends.extend(self._sent(view, outage))
            if owed(view, outage, mail_channels, route):
                mail.append(view.notification.id)
        relayed = await self._relay(mail)
        return relayed + await self._queue(outage, sends)

    async def _in_scope(self, outage: Outage) -> AsyncIterator[tuple[NotificationView, Route | None]]:
        """What may have gone out during ``outage``, but our own and ``catch_up: false`` routes',
        each with the route that planned it (None: not one of these routes)."""
        routes = {r.name: r for _, r in walk(self._routes())}
        async for view in self._pages(outage.started_at - LOOKBACK):
            route = routes.get(view.route)
            ours = view.notification.source in (SOURCE, DRILL_SOURCE)
            if not ours and (route is None or route.catch_up):
                yield view, route

    async def _pages(self, since: datetime) -> AsyncIterator[NotificationView]:
        """Every notification created since ``since``, newest first, a page at a time."""
        before: str | None = None
        while page := await self._store.search(ListFilter(since=since, before=before, limit=PAGE)):
            for view in page:
                yield view
            before = page[-1].notification.id

    def _sent(self, view: NotificationView, outage: Outage) -> Iterator[Sent]:
        n = view.notification
        audiences = self._people.audiences()
        # e.g. an SMS Twilio later reported undelivered: that delivery failed, it reached nobody
        undone = withdrawn((a.delivery_id, a.outcome) for a in view.attempts)
        for attempt in view.attempts:
            audience = audiences.get(attempt.channel)
            during = outage.started_at <= attempt.started_at <= outage.ended_at
            if audience is None or attempt.outcome != "delivered" or not during:
                continue
            if attempt.delivery_id in undone:
                continue
            found = self._people.readdress(attempt.channel, n, view.route, attempt.started_at)
            recipients = n.recipients if found is None else found.recipients
            yield Sent(
                n.id,
                n.subject,
                n.severity.value,
                attempt.channel,
                audience.kind,
                attempt.started_at,
                audience.destinations(recipients),
                attempt.detail or "",
            )

    async def _relay(self, ids: list[str]) -> int:
        """Relay the smart host's messages ``ids`` by email (daemon.after_outage); how many were new."""
        steps = tuple(sorted(self._primary()))
        if ids and not steps:
            log.warning(
                "%d messages of the smart host reached people only through backup channels and "
                "cannot be relayed by email: no primary email channel",
                len(ids),
                extra={"event": "catchup.relay_skipped", "count": len(ids)},
            )
            return 0
        ids = sorted(ids)  # oldest first (ULIDs, in order of arrival), as they came
        relayed = 0
        for start in range(0, len(ids), RELAY_BATCH):
            now = self._clock.now()
            copies = []
            for notification_id in ids[start : start + RELAY_BATCH]:
                if await self._store.by_key(relay_key(notification_id)) is not None:
                    continue  # relayed already: a run before this one
                view = await self._store.notification(notification_id)
                if view is not None:
                    copies.append(relay_copy(view.notification, steps, now))
            accepted = await self._store.accept(copies, now) if copies else []
            new = sum(not a.duplicate for a in accepted)
            self._on_relayed(new)
            relayed += new
        if ids:
            log.info(
                "catch-up: %d messages of the smart host relayed by email (%d owed)",
                relayed,
                len(ids),
                extra={"event": "catchup.relayed", "count": relayed, "owed": len(ids)},
            )
        return relayed

    async def _queue(self, outage: Outage, sends: list[Sent]) -> int:
        directory = self._people.directory
        steps = tuple(sorted(self._primary()))
        now = self._clock.now()
        items = []
        for name, lines in received_by(sends, directory).items():
            person = directory.people[name]
            if not person.emails or not steps:
                log.warning(
                    "no catch-up for %s: %s",
                    name,
                    "no email address" if steps else "no primary email channel",
                    extra={"event": "catchup.skipped", "person": name},
                )
                continue
            subject, body = catch_up_email(person, lines, outage, self._provider)
            items.append(_item(catch_up_key(outage, name), person.emails[0], name, subject, body, steps, now))
        accepted = await self._store.accept(items, now) if items else []
        new = sum(not a.duplicate for a in accepted)
        log.info(
            "catch-up: %d emails queued for the outage from %s",
            new,
            outage.started_at.isoformat(),
            extra={"event": "catchup.queued", "count": new, "people": len(items)},
        )
        return new


def _item(
    key: str, to: str, person: str, subject: str, body: str, steps: tuple[str, ...], now: datetime
) -> NewNotification:
    notification = Notification(
        id=new_id(now),
        idempotency_key=key,
        created_at=now,
        severity=Severity.INFO,
        subject=subject,
        body=body,
        source=SOURCE,
        recipients=(to,),
        labels={"event": "recovery.catch_up", "person": person},
    )
    # By email, the point of it; should the provider fail again first, held until it is back.
    plans: dict[Mode, Plan] = {
        "healthy": Plan(route=ROUTE, mode="healthy", steps=steps),
        "outage": Plan(route=ROUTE, mode="outage", defer=True),
    }
    return NewNotification(notification, plans, pinned=True)
