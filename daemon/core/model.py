"""The domain: notifications, their deliveries, the provider's state and check results.

Pure data. No I/O, no clock: whoever builds these passes the times in.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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


def other_mode(mode: Mode) -> Mode:
    """The mode that is not ``mode``: there are two."""
    return "outage" if mode == "healthy" else "healthy"


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
class EscalationStep:
    """Channels sent to together (fan-out) once ``after`` has passed since the plan started."""

    after: timedelta
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Escalation:
    """Steps in time, each sent unless the notification was acknowledged before it fell due.

    A step whose channel fails for good makes the next step due at once: the failover that a
    plain list of channels gives, kept inside an escalation.
    """

    steps: tuple[EscalationStep, ...]

    def __post_init__(self) -> None:
        if not self.steps or not all(s.channels for s in self.steps):
            raise ValueError("an escalation has steps, each with channels")
        afters = [s.after for s in self.steps]
        if afters != sorted(set(afters)) or afters[0] < timedelta(0):
            raise ValueError("escalation steps need increasing 'after' times, from 0s on")

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(c for s in self.steps for c in s.channels)

    def __iter__(self) -> Iterator[str]:
        """Its channels in order, as a failover list iterates: code that lists channels needs no case."""
        return iter(self.channels)

    def schedule(self, start: datetime) -> list[tuple[int, str, datetime]]:
        """Each delivery as (step, channel, due time) for an escalation starting at ``start``."""
        return [(i, c, start + s.after) for i, s in enumerate(self.steps) for c in s.channels]


@dataclass(frozen=True, slots=True)
class Plan:
    """What routing decided for one notification in one mode.

    ``steps`` are channel names tried in order: a permanent failure (or retries exhausted)
    moves to the next. ``escalation`` instead sends its steps at their times until someone
    acknowledges. ``defer`` means hold the notification until the mode changes.
    """

    route: str
    mode: Mode
    steps: tuple[str, ...] = ()
    defer: bool = False
    escalation: Escalation | None = None

    def __post_init__(self) -> None:
        if [self.defer, bool(self.steps), self.escalation is not None].count(True) != 1:
            raise ValueError("a plan either defers, has steps or escalates")

    @property
    def channels(self) -> tuple[str, ...]:
        """Every channel the plan may use, in order."""
        return self.escalation.channels if self.escalation is not None else self.steps


#: a follow-up names the notification it follows (by idempotency key): a channel threads it there
FOLLOWS_LABEL = "follows"
#: a resolution names the notification it resolves (by idempotency key) in this label: the
#: store closes that one (its steps not yet sent are superseded) as it commits the resolution
RESOLVES_LABEL = "resolves"
#: a version of an alert group names the group (its lineage) in this label: the store closes the
#: group's other versions still open (superseded by this one) as it commits it
SUPERSEDES_LABEL = "supersedes"
#: a new version of an alert group someone had taken on carries who (``<by> via <via>``): it is
#: told once, like a resolution, and does not page again (the store sets it as it commits)
GROUP_ACKNOWLEDGED_LABEL = "group_acknowledged"
#: a firing version of an alert group names its firing alerts (a digest, then ``+`` when some of
#: the group's alerts resolved, which the version tells): one naming the firing alerts of the
#: group's latest version, and no resolved one, repeats it (the store answers it as a duplicate)
GROUP_FIRING_LABEL = "group_firing"
#: labels only the alert intakes' mappings may set (an API caller could close others' notifications)
RESERVED_LABELS = (RESOLVES_LABEL, SUPERSEDES_LABEL, GROUP_ACKNOWLEDGED_LABEL, GROUP_FIRING_LABEL)
#: the source of backchannel's own word: its announcements and catch-ups
OWN_SOURCE = "backchannel"
#: labels a channel threads by (``channels.slack.THREAD_LABEL``: a Slack ``channel:ts`` to post
#: into): backchannel's own to set, never a sender's, which could post into any channel the bot is
#: in. The alert intakes drop them; the HTTP API refuses them.
CHANNEL_THREAD_LABELS = ("slack_thread_ts",)


#: an ack code's length: 32**6 (about a billion) codes, few enough characters to type on a phone
ACK_CODE_LENGTH = 6
#: Crockford base32 (https://www.crockford.com/base32.html): no I, L, O or U, nothing to misread
ACK_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Crockford base32 reads these as the digits they look like
_LOOKALIKES = str.maketrans({"I": "1", "L": "1", "O": "0"})


def normalise_ack_code(text: str) -> str:
    """An ack code as typed (any case, O for 0, I or L for 1) in its stored form."""
    return text.strip().upper().translate(_LOOKALIKES)


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
    CANCELLED = "cancelled"
    #: someone acknowledged it before anything was delivered: nothing more is sent
    ACKNOWLEDGED = "acknowledged"


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
    #: the digest it was last sent in (burst digests), to be sent again in the same one
    digest: str | None = None
