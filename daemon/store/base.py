"""The store interface: the outbox is the truth.

Exceptions::

    StoreError               anything the store cannot do
      ├── StoreUnavailable   a commit failed (disk full, I/O error): nothing in it was accepted
      └── KeyReused          a client's idempotency key came back with another request

Every write commits durably before its coroutine returns. A backend implements
:class:`Store`; the SQLite one is embedded, the PostgreSQL one serves several nodes. The values
it takes and gives back are in :mod:`daemon.store.values`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from daemon.core.health import HealthSnapshot, Transition
from daemon.core.model import CheckResult, Mode, Notification, Plan
from daemon.store.values import (
    Accepted,
    AckResult,
    Callback,
    CancelResult,
    ChannelHealth,
    Claimed,
    ListFilter,
    NewNotification,
    NotificationView,
    Outcome,
    ProviderView,
    QueueView,
)


class StoreError(Exception):
    """The store failed."""


class NotLeader(StoreError):
    """A write fenced by the leader's token updated nothing: this node is no longer the leader."""


class StoreUnavailable(StoreError):
    """The store could not commit; nothing was accepted."""


class Unreadable(StoreError):
    """A notification's row this release cannot read (:mod:`daemon.store.unreadable`)."""

    def __init__(self, notification_id: str, why: str) -> None:
        super().__init__(f"notification {notification_id}: {why}")
        self.notification_id = notification_id


class KeyReused(StoreError):
    """An accept's idempotency key was first used for a different request (another digest).

    Nothing of that accept is stored; accepts committed beside it are not affected.
    """

    def __init__(self, key: str, first_id: str, index: int) -> None:
        super().__init__(f"idempotency key {key!r} was first used for a different notification ({first_id})")
        self.key = key
        #: the notification the key was first used for
        self.first_id = first_id
        #: which of the accept's notifications reused it
        self.index = index


def refused(key: str, first_id: str, first: str | None, again: str | None) -> bool:
    """Whether an accept of ``key`` with request digest ``again`` is refused (:class:`KeyReused`),
    the key being stored for ``first_id`` with digest ``first``: it came back with another request
    (:func:`reused`), or the client chose as its key the id of a notification accepted without one
    (such a notification's key is its id, and it has no digest to compare)."""
    return reused(first, again) or (again is not None and first is None and key == first_id)


def reused(first: str | None, again: str | None) -> bool:
    """Whether a key's request digest says it came back with another request. Unknown (either
    missing, or the two made by different versions of the digest: ``v1:...``) is not reuse."""
    if first is None or again is None or first == again:
        return False
    return first.partition(":")[0] == again.partition(":")[0]


#: what became of one accept call: its notifications' results, or the refusal of its reused key
AcceptResult = list[Accepted] | KeyReused


def answer(future: asyncio.Future[list[Accepted]], result: AcceptResult) -> None:
    """Tell an accept's caller what became of its call (a batching store's last step)."""
    if future.done():  # the caller gave up
        return
    if isinstance(result, KeyReused):
        future.set_exception(result)
    else:
        future.set_result(result)


#: told an accept's results once its notifications are committed and visible (see Store.accept)
OnVisible = Callable[[list[Accepted]], None]


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def probe(self, *, commit: bool) -> None:
        """For readiness (:mod:`daemon.store_health`): a read round trip, or with ``commit`` a
        durable commit that keeps nothing; StoreUnavailable if the store cannot."""
        ...

    async def accept(
        self,
        items: Sequence[NewNotification],
        now: datetime,
        *,
        on_visible: OnVisible | None = None,
    ) -> list[Accepted]:
        """Commit durably, then answer. ``on_visible``, if the store calls it, runs on the event
        loop once the notifications are committed and visible to other connections, possibly
        before they are durable (SQLite: before the WAL's fsync), never after this returns.

        Raises :class:`KeyReused`, storing none of ``items``, if one reuses a key with another
        request digest (:attr:`NewNotification.digest`)."""
        ...

    async def claim(
        self, channel: str, limit: int, now: datetime, lease_until: datetime
    ) -> list[Claimed]: ...

    async def prune(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` finished notifications (and their deliveries, attempts and group
        versions) last changed before ``before``, none with a delivery left to send; how many."""
        ...

    async def record(self, outcomes: Sequence[Outcome], now: datetime) -> None: ...

    async def fail_stranded(
        self, channel: str, before: datetime, limit: int, detail: str, now: datetime
    ) -> int:
        """Fail, as a send that failed for good would (the plan moves on), up to ``limit`` pending
        deliveries on ``channel`` due since ``before``, in one transaction; return how many."""
        ...

    async def mark_digest(self, delivery_ids: Sequence[int], digest_id: str) -> None:
        """Note on these claimed deliveries the digest they are about to be sent in."""
        ...

    async def renew(self, delivery_ids: Sequence[int], now: datetime, lease_until: datetime) -> set[int]:
        """Extend to ``lease_until`` the leases of those of ``delivery_ids`` this node still holds,
        unexpired; return the ids renewed (a claim not among them is no longer this node's to send)."""
        ...

    async def release_claims(self, now: datetime) -> int: ...

    async def release_expired(self, now: datetime) -> int: ...

    async def due(self) -> Mapping[str, datetime]: ...

    async def acknowledged(self, notification_ids: Sequence[str]) -> set[str]:
        """Those of ``notification_ids`` someone has acknowledged."""
        ...

    async def reroute_candidates(self, mode: Mode, limit: int, after_id: str = "") -> list[Notification]:
        """Unsent notifications planned by the routes for another mode than ``mode``, in id order
        from after ``after_id`` (a page at a time: the last one's id gives the next page)."""
        ...

    async def repin(self, mode: Mode, now: datetime, limit: int) -> int:
        """Give up to ``limit`` unsent pinned notifications of another mode their plan for ``mode``."""
        ...

    async def reroute(
        self, mode: Mode, plans: Mapping[str, Plan], now: datetime, *, force: bool = False
    ) -> int: ...

    async def unsent(self, after_id: str, limit: int) -> list[tuple[Notification, Plan]]:
        """Unsent notifications planned by the routes, by id after ``after_id``, with their plans."""
        ...

    async def owe_replan(self, routes: str, now: datetime) -> None:
        """Commit durably that the unsent notifications owe a re-plan by the routes whose digest
        is ``routes`` (a policy reload's), until :meth:`settle_replans` says it is done; and that
        these are the routes they are planned by (:meth:`planned_routes`)."""
        ...

    async def owed_replans(self) -> set[str]:
        """The digests of the routes whose owed re-plan is not done yet."""
        ...

    async def planned_routes(self) -> str | None:
        """The digest of the routes the unsent notifications were last planned by (the latest
        :meth:`owe_replan` or :meth:`plan_routes`), None before any."""
        ...

    async def plan_routes(self, routes: str) -> None:
        """Record ``routes`` as the routes the unsent notifications are planned by, owing nothing
        (the first start of a store, which has planned by no other)."""
        ...

    async def settle_replans(self, routes: Collection[str]) -> None:
        """The re-plans owed by these routes' digests are done: forget them."""
        ...

    async def save_provider(
        self, snapshot: HealthSnapshot, transition: Transition | None, now: datetime
    ) -> None: ...

    async def record_check(self, result: CheckResult) -> None: ...

    async def provider(self, events: int = 20, checks: int = 20) -> ProviderView: ...

    async def queue(self) -> QueueView: ...

    async def notification(self, notification_id: str) -> NotificationView | None: ...

    async def channel_health(self) -> list[ChannelHealth]: ...

    async def thread_of(
        self, idempotency_key: str, channel: str, *, any_state: bool = False
    ) -> str | None: ...

    async def drill(self, drill_id: str) -> list[NotificationView]: ...

    async def history(self, since: datetime) -> tuple[list[Transition], list[CheckResult]]: ...

    async def recent(self, limit: int) -> list[NotificationView]: ...

    async def search(self, query: ListFilter) -> list[NotificationView]: ...

    async def cancel(self, notification_id: str, now: datetime) -> CancelResult: ...

    async def latest_drill(self) -> str | None: ...

    async def record_callback(self, callback: Callback) -> bool: ...

    async def acknowledge(self, notification_id: str, by: str, via: str, now: datetime) -> AckResult:
        """Stop the escalation: pending deliveries are superseded, the trail records who and how.

        Only ``via="api"`` (an admin) stops a notification that does not escalate; other ways find
        ``not_found``.
        """
        ...

    async def by_key(self, idempotency_key: str) -> str | None:
        """The id of the notification stored under ``idempotency_key``, if any."""
        ...

    async def by_ack_code(self, code: str) -> str | None:
        """The newest open escalation (unacknowledged, not cancelled) with this ack code (normalised),
        else the newest version of an alert group a newer version closed with it (acknowledging
        that one takes on the group, as its Slack button does).

        Never a notification that does not escalate: those have no code.
        """
        ...
