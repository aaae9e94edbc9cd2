"""The domain: notifications, their deliveries, the provider's state and check results.

Pure data. No I/O, no clock: whoever builds these passes the times in.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal


class Severity(enum.StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        """0 for the most severe."""
        return list(Severity).index(self)


class ProviderState(enum.StrEnum):
    """The primary email provider as the daemon sees it (see DESIGN.md and docs/deciding.md)."""

    HEALTHY = "healthy"
    SUSPECT = "suspect"
    OUTAGE = "outage"
    RECOVERING = "recovering"
    #: the provider's checks and the control targets fail together: our own network, not the provider
    UNKNOWN = "unknown"
    #: the provider refuses our credentials (SMTP 535, IMAP AUTHENTICATIONFAILED): renew them
    CREDENTIALS = "credentials"
    #: the evidence changes too often to trust a recovery: routing holds the outage side
    FLAPPING = "flapping"


#: Which side of a route applies: email while the provider works, backups until recovery is confirmed.
Mode = Literal["healthy", "outage"]

#: states that say nothing about whether mail flows: routing stays on the mode in force
_NO_VERDICT = frozenset({ProviderState.UNKNOWN, ProviderState.CREDENTIALS})
_OUTAGE_SIDE = frozenset({ProviderState.OUTAGE, ProviderState.RECOVERING, ProviderState.FLAPPING})


def mode_for(state: ProviderState, in_force: Mode | None = None) -> Mode:
    """Suspect still routes by email; recovering and flapping still route around it.

    ``unknown`` (our network) and ``credentials`` (renew them) prove nothing about the provider, so
    they keep ``in_force``, the mode of the state they overlay: a local network blip during an
    outage must not send everything back to email, nor one while healthy fail over. Without
    ``in_force`` they raise, rather than guess (``HealthSnapshot.mode`` knows the answer).
    """
    if state not in _NO_VERDICT:
        return "outage" if state in _OUTAGE_SIDE else "healthy"
    if in_force is None:
        raise ValueError(f"the mode for {state.value} is the mode in force: pass in_force")
    return in_force


class CheckStatus(enum.StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"
    UNKNOWN = "unknown"
    #: the provider answered but refused our credentials (SMTP 535): renew them, not an outage
    CREDENTIALS = "credentials"


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: str
    status: CheckStatus
    reason: str
    latency_s: float
    at: datetime


@dataclass(frozen=True, slots=True)
class Notification:
    id: str
    idempotency_key: str
    created_at: datetime
    severity: Severity
    subject: str
    body: str = ""
    source: str = "api"
    recipients: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    mail_from: str | None = None
    raw: bytes | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What routing decided for one notification in one mode.

    ``steps`` are channel names tried in order: a permanent failure (or retries exhausted)
    moves to the next. ``defer`` means hold the notification until the mode changes.
    """

    route: str
    mode: Mode
    steps: tuple[str, ...] = ()
    defer: bool = False

    def __post_init__(self) -> None:
        if self.defer == bool(self.steps):
            raise ValueError("a plan either defers or has steps")


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    HELD = "held"
    DELIVERED = "delivered"
    FAILED = "failed"
    #: replaced by a new plan when the provider's state changed before it was sent
    SUPERSEDED = "superseded"


class NotificationStatus(enum.StrEnum):
    PENDING = "pending"
    HELD = "held"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    notification_id: str
    mode: Mode
    route: str
    step: int
    channel: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None = None
