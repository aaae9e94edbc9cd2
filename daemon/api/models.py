"""The HTTP API's request bodies."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from daemon.core.model import Severity

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
