"""The response bodies of the operations endpoints: ``/healthz``, ``/v1/status``, the provider
override and the drills.

As in :mod:`daemon.api.models`, they are the routes' ``response_model``: what a route returns is
validated against them, so ``/openapi.json`` describes exactly what the daemon answers and a field
added to :mod:`daemon.api.views` without its description here fails the tests, not a client.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from daemon.api.models import Out, Timestamp
from daemon.core.assessment import Role
from daemon.core.model import CheckStatus, Mode, NotificationStatus, ProviderState


class HealthOut(Out):
    """Ready: every intake serves, and not draining."""

    status: Literal["ok"]
    provider: ProviderState


class CheckOut(Out):
    """One check result."""

    check: str
    status: CheckStatus
    reason: str
    latency_s: float
    at: Timestamp


class EventOut(Out):
    """A transition of the provider's state."""

    at: Timestamp
    from_state: ProviderState = Field(alias="from")
    to: ProviderState
    cause: str


class ForcedOut(Out):
    """An operator's override in force."""

    state: ProviderState
    reason: str


class ProviderOut(Out):
    """The provider's state as stored: the override in force, if any, over what the checks say."""

    name: str
    state: ProviderState
    mode: Mode
    since: Timestamp | None
    natural_state: ProviderState = Field(description="what the checks alone say")
    forced: ForcedOut | None
    consecutive_failures: int
    consecutive_successes: int
    events: list[EventOut] = Field(description="the latest transitions, newest first")
    checks: list[CheckOut] = Field(description="the latest check results, newest first")


class QueueOut(Out):
    """The outbox: notifications by status, deliveries by state."""

    notifications: dict[str, int]
    deliveries: dict[str, int]
    oldest_pending_at: Timestamp | None
    sending_now: int


class ChannelOut(Out):
    """A channel's recent health, from its deliveries."""

    channel: str
    last_success_at: Timestamp | None
    last_failure_at: Timestamp | None
    last_error: str | None
    consecutive_failures: int


class LatestOut(Out):
    status: CheckStatus
    reason: str
    latency_s: float
    at: Timestamp


class RecentOut(Out):
    at: Timestamp
    status: CheckStatus


class ExplainCheckOut(Out):
    """One check as the decision weighs it (docs/deciding.md)."""

    name: str
    role: Role
    weight: int
    fresh: bool
    note: str
    latest: LatestOut | None
    recent: list[RecentOut] = Field(description="oldest first")


class ExplainOut(Out):
    """Why the provider is in its state: the decision's inputs and reasons (docs/deciding.md)."""

    at: Timestamp | None
    state: ProviderState
    mode: Mode
    since: Timestamp | None
    why: list[str]
    flap_percent: float
    checks: list[ExplainCheckOut]


class DrillChannelOut(Out):
    channel: str
    status: NotificationStatus = Field(description="the drill message's status (it can be cancelled)")
    detail: str | None
    confirmed: bool = Field(description="the vendor confirmed delivery afterwards (a Twilio callback)")
    notification_id: str


class DrillOut(Out):
    """A failover drill's results, per backup channel."""

    drill: str
    done: bool = Field(
        description="every channel's message is finished: delivered, failed, cancelled or acknowledged"
    )
    ok: bool = Field(description="every channel delivered")
    channels: list[DrillChannelOut]


class DrillStarted(Out):
    """A drill queued: its id, and each channel's drill message."""

    drill: str
    notifications: dict[str, str] = Field(description="channel to notification id")


class NodeOut(Out):
    """A node of a PostgreSQL cluster seen in the last hour."""

    node: str
    role: str
    checks: list[CheckOut]


class StoreOut(Out):
    """Whether the store commits, as ``/healthz`` tells load balancers (docs/api.md)."""

    state: Literal["ok", "unavailable"] = Field(
        description="unavailable: the latest store calls failed; intake and /healthz answer 503"
    )
    since: Timestamp | None = Field(description="when the failure began")
    reason: str | None = Field(description="the latest failure's error")


class StatusOut(Out):
    """``GET /v1/status``: the store, the provider, the queue, the channels, the decision, the
    last drill. While the store cannot be read (PostgreSQL unreachable) it still answers, with the
    store unavailable, the provider's state as this process holds it and null for what only the
    store knows."""

    version: str
    store: StoreOut
    provider: ProviderOut = Field(
        description="while the store cannot be read, this process's own view: no events or checks"
    )
    queue: QueueOut | None = Field(description="null while the store cannot be read")
    channels: list[ChannelOut] | None = Field(description="null while the store cannot be read")
    explain: ExplainOut
    last_drill: DrillOut | None
    nodes: list[NodeOut] | None = Field(
        description="with PostgreSQL; empty with SQLite; null while the store cannot be read"
    )


class OverrideOut(Out):
    """The provider's state after forcing or releasing it."""

    state: ProviderState
    forced: ProviderState | None
