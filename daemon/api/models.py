"""The HTTP API's request bodies, and the response bodies its OpenAPI document describes.

The response models are the routes' ``response_model``: what a route returns is validated
against them, so ``/openapi.json`` cannot drift from the JSON :mod:`daemon.api.views` writes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, field_validator

from daemon.core.model import (
    CHANNEL_THREAD_LABELS,
    OWN_SOURCE,
    RESERVED_LABELS,
    DeliveryState,
    Mode,
    NotificationStatus,
    Severity,
)
from daemon.drills import SOURCE as DRILL_SOURCE
from daemon.refusals import BOUNCE_SOURCE

Label = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class NotificationIn(BaseModel):
    """One notification to deliver."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    severity: Severity = Field(description="critical, high, warning or info")
    subject: Annotated[str, StringConstraints(min_length=1, max_length=998)]
    body: Annotated[str, StringConstraints(max_length=65536)] = ""
    source: Annotated[str, StringConstraints(min_length=1, max_length=128)] = "api"
    recipients: Annotated[
        list[Annotated[str, StringConstraints(min_length=3, max_length=320)]], Field(max_length=100)
    ] = []
    labels: Annotated[dict[Label, Label], Field(max_length=64)] = {}
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = Field(
        default=None, description="repeating a key returns the first notification instead of a new one"
    )

    @field_validator("idempotency_key")
    @classmethod
    def _not_an_intakes_key(cls, key: str | None) -> str | None:
        if key is not None and (why := reserved_key(key)):
            raise ValueError(why)
        return key

    @field_validator("source")
    @classmethod
    def _not_backchannels_own_source(cls, source: str) -> str:
        if source in RESERVED_SOURCES:
            # a drill's is shown as a test ([DRILL], the drill banner) and left out of catch-ups;
            # backchannel's own (announcements, catch-ups) are what the recovery looks its thread up by
            raise ValueError(f"'{source}' is reserved: backchannel's own notifications use it")
        return source

    @field_validator("labels")
    @classmethod
    def _no_reserved_label(cls, labels: dict[str, str]) -> dict[str, str]:
        for reserved in RESERVED_LABELS:
            if reserved in labels:
                raise ValueError(f"'{reserved}' is reserved: the alert intakes alone say what closes what")
        for reserved in CHANNEL_THREAD_LABELS:
            if reserved in labels:
                # it named the Slack channel and thread to post to, in place of the configured targets
                raise ValueError(f"'{reserved}' is reserved: backchannel alone threads a channel's messages")
        return labels


#: the sources of what backchannel makes itself: drills, its announcements and catch-ups, and the
#: reports of mail the provider refused
RESERVED_SOURCES = frozenset({DRILL_SOURCE, OWN_SOURCE, BOUNCE_SOURCE})

#: the key namespaces of what backchannel makes or takes in itself: the alert intakes
#: (``alertmanager:``, ``grafana:``), the smart host (``smtp:``), its follow-ups and reports
#: (``relay:``, ``bounce:``), announcements (``transition:``), catch-ups (``catchup:``) and drills
#: (``drill-``). A key is looked up whoever sent it: an API client choosing one of these could pass
#: its notification off as an alert's and have the alert answered as its duplicate.
RESERVED_KEY_PREFIXES = (
    "alertmanager:",
    "grafana:",
    "smtp:",
    "relay:",
    "bounce:",
    "transition:",
    "catchup:",
    "drill-",
)


def reserved_key(key: str) -> str | None:
    """Why ``key`` cannot be an API client's, or None."""
    prefix = next((p for p in RESERVED_KEY_PREFIXES if key.startswith(p)), None)
    return None if prefix is None else f"keys starting with {prefix!r} are backchannel's own"


NotificationBatch = Annotated[list[NotificationIn], Field(min_length=1, max_length=1000)]

#: POST /v1/notifications takes one notification or a batch of up to 1,000
SUBMIT: TypeAdapter[NotificationIn | list[NotificationIn]] = TypeAdapter(NotificationIn | NotificationBatch)
#: its JSON Schema for the OpenAPI document: references point into ``components.schemas``,
#: where SUBMIT_COMPONENTS go (a ``#/$defs/...`` reference would resolve against the document's
#: root, where nothing is, and clients and fuzzers could not read the request body)
SUBMIT_SCHEMA = SUBMIT.json_schema(ref_template="#/components/schemas/{model}")
SUBMIT_COMPONENTS: dict[str, Any] = SUBMIT_SCHEMA.pop("$defs")


class OverrideIn(BaseModel):
    """Force the provider's state until released (a drill, or an operator who knows better)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: Literal["healthy", "outage"]
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)] = "operator override"


#: a notification id (a ULID: 26 Crockford base32 characters), as ``next_cursor`` and ``cursor``
CURSOR_PATTERN = r"^[0-9A-HJKMNP-TV-Z]{26}$"
#: a UTC time as :func:`daemon.api.views.iso` writes it
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class Out(BaseModel):
    """A response body: no field but those declared (:mod:`daemon.api.status_models` too)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DeliveryOut(Out):
    """One step of the plan: a channel, its state and attempts so far."""

    channel: str
    mode: Mode
    step: int
    state: DeliveryState
    attempts: int
    next_attempt_at: Timestamp | None
    last_error: str | None


class AttemptOut(Out):
    """One attempt of a delivery, or a trail entry (acknowledged, a vendor callback)."""

    delivery_id: int
    channel: str
    attempt: int
    started_at: Timestamp
    finished_at: Timestamp
    outcome: str
    detail: str | None


class NotificationOut(Out):
    """A notification, its status, the plan it was routed by and its delivery trail."""

    id: str
    idempotency_key: str
    status: NotificationStatus
    severity: Severity
    subject: str
    source: str
    recipients: list[str]
    labels: dict[str, str]
    created_at: Timestamp
    route: str
    mode: Mode
    plan: list[str]
    deliveries: list[DeliveryOut]
    attempts: list[AttemptOut]


class NotificationPage(Out):
    """A page of ``GET /v1/notifications``, newest first."""

    items: list[NotificationOut]
    next_cursor: Annotated[str, Field(pattern=CURSOR_PATTERN)] | None = Field(
        description="pass it back as `cursor` for the next page; null on the last page"
    )


class Cancelled(Out):
    """A notification cancelled: nothing more of it is sent."""

    id: str
    status: Literal["cancelled"]


class Acknowledged(Out):
    """``acknowledged`` now, or ``already`` by someone before (nothing changed)."""

    id: str
    result: Literal["acknowledged", "already"]
