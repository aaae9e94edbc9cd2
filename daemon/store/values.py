"""The values the store takes and gives back: what an accept commits and answers, a claimed
delivery and the outcome of its attempt, a vendor's callback, and the views the API and the
status page read.

Frozen dataclasses and literals only; the :class:`~daemon.store.base.Store` protocol that takes
and returns them, and the store's exceptions, are in :mod:`daemon.store.base`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from daemon.core.health import HealthSnapshot, Transition
from daemon.core.model import CheckResult, Delivery, Mode, Notification, Plan, ProviderState
from daemon.core.routing import NO_OVERRIDES, Overrides


@dataclass(frozen=True, slots=True)
class NewNotification:
    notification: Notification
    #: the plan for each mode; the store picks the one in force when it commits
    plans: Mapping[Mode, Plan]
    #: the plans were made here, not by the routes (a drill's, a recovery announcement's to one
    #: channel, a catch-up's): the store keeps both, a mode change gives the notification its own plan for
    #: the new mode (:meth:`~daemon.store.base.Store.repin`), and a policy reload leaves it alone
    pinned: bool = False
    #: a digest of the API request, where its client chose the idempotency key: the key sent again
    #: with another digest is refused (:class:`~daemon.store.base.KeyReused`), with the same one a
    #: duplicate
    digest: str | None = None
    #: the route's own plans while an overlay state (unknown, credentials) is in force, by
    #: (state, mode): the store picks one of these before ``plans`` when it commits
    overrides: Overrides = field(default_factory=lambda: NO_OVERRIDES)

    def plan_in(self, mode: Mode, state: ProviderState | None) -> Plan:
        """The plan to commit while ``mode`` is in force and the provider is in ``state``."""
        if state is None or not self.overrides:
            return self.plans[mode]
        return self.overrides.get((state, mode)) or self.plans[mode]


@dataclass(frozen=True, slots=True)
class Accepted:
    id: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Claimed:
    delivery: Delivery
    notification: Notification
    #: the notification's ack code while its escalation waits for an acknowledgement, else None
    ack_code: str | None = None
    #: the channels of the failover list after this step, which failing it for good starts at
    #: once; none for its last step and for an escalation's (whose later steps fall due at their
    #: own times)
    then: tuple[str, ...] = ()

    @property
    def fails_over(self) -> bool:
        """Failing this step for good starts the plan's next channel at once."""
        return bool(self.then)


OutcomeKind = Literal["delivered", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class Outcome:
    delivery_id: int
    kind: OutcomeKind
    started_at: datetime
    finished_at: datetime
    detail: str = ""
    retry_at: datetime | None = None
    #: what the attempt delivered (a retry or failure may have reached some of its targets)
    remote_id: str | None = None
    #: the claim it answers for: the delivery's ``attempts`` when claimed. A claim whose lease ran
    #: out may be released and claimed again meanwhile; its outcome, late, is then history only,
    #: and the new claim's own outcome decides. None: made in the claim's own transaction.
    claim: int | None = None

    def stale(self, state: str, attempts: int) -> bool:
        """Whether this answers for a claim no longer in force (the delivery's ``state`` and
        ``attempts`` now): not in flight any more, or released and claimed again since."""
        return self.claim is not None and (state != "in_flight" or attempts != self.claim)


@dataclass(frozen=True, slots=True)
class AttemptView:
    delivery_id: int
    channel: str
    attempt: int
    started_at: datetime
    finished_at: datetime
    outcome: str
    detail: str | None


@dataclass(frozen=True, slots=True)
class NotificationView:
    notification: Notification
    status: str
    route: str
    mode: Mode
    plan: tuple[str, ...]
    deliveries: tuple[Delivery, ...]
    attempts: tuple[AttemptView, ...]


@dataclass(frozen=True, slots=True)
class ProviderView:
    state: ProviderState
    mode: Mode
    snapshot: HealthSnapshot
    events: tuple[Transition, ...] = ()
    checks: tuple[CheckResult, ...] = ()


@dataclass(frozen=True, slots=True)
class ChannelHealth:
    channel: str
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    consecutive_failures: int


@dataclass(frozen=True, slots=True)
class Callback:
    """A vendor's later word on a delivery it had accepted (e.g. Twilio: undelivered)."""

    channel: str
    remote_id: str
    delivered: bool | None  # None: still on its way, recorded only
    detail: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ListFilter:
    status: str | None = None
    severity: str | None = None
    since: datetime | None = None
    #: cursor: only notifications with a smaller (older) id
    before: str | None = None
    limit: int = 100


#: what cancelling found: done, or why not
CancelResult = Literal["cancelled", "not_found", "in_flight", "finished"]

#: what acknowledging found: done now, done before, no such notification, or nothing left to stop
AckResult = Literal["acknowledged", "already", "not_found", "finished"]


@dataclass(frozen=True, slots=True)
class QueueView:
    notifications: Mapping[str, int] = field(default_factory=dict)
    deliveries: Mapping[str, int] = field(default_factory=dict)
    oldest_pending_at: datetime | None = None
