"""Configuration of escalations: a route action given as steps in time (docs/policies.md, Escalation).

``{escalate: [{after: 0s, notify: [slack-oncall]}, {after: 5m, notify: [sms-oncall]}]}`` becomes the
core's :class:`~daemon.core.model.Escalation`. :data:`ChannelRef` (a channel name checked against
the configured channels) is shared with the routes' failover lists.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Annotated

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from daemon.configbase import Model, format_duration, parse_duration
from daemon.core.model import Escalation, EscalationStep


def _known_channel(value: str, info: ValidationInfo) -> str:
    channels = info.context.get("channels") if isinstance(info.context, dict) else None
    if channels is not None and value not in channels:
        known = ", ".join(sorted(channels)) or "none"
        raise ValueError(f"unknown channel {value!r} (channels: {known})")
    return value


def _delay(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str | int | float):
        raise ValueError("expected a duration such as 0s, 5m or 1h30m")
    delay = parse_duration(value)
    if delay < timedelta(0):
        raise ValueError("a delay cannot be negative")
    return delay


ChannelRef = Annotated[str, AfterValidator(_known_channel)]
#: a duration that may be zero (the first escalation step is usually ``0s``)
Delay = Annotated[
    timedelta,
    BeforeValidator(_delay),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ms|s|m|h|d)?)+\s*$"}),
]


class EscalationStepConfig(Model):
    """``{after: 5m, notify: [sms-oncall]}``: these channels, together, 5 minutes after acceptance."""

    after: Delay
    notify: list[ChannelRef] = Field(min_length=1)


class EscalateConfig(Model):
    """Steps in time until someone acknowledges."""

    escalate: list[EscalationStepConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _increasing(self) -> EscalateConfig:
        afters = [s.after for s in self.escalate]
        if any(later <= earlier for earlier, later in itertools.pairwise(afters)):
            shown = ", ".join(format_duration(a) for a in afters)
            raise ValueError(f"escalate: each step's 'after' must be later than the one before ({shown})")
        channels = [c for s in self.escalate for c in s.notify]
        repeated = sorted({c for c in channels if channels.count(c) > 1})
        if repeated:
            # the notification id is each send's idempotency key: a channel's second send is a repeat
            raise ValueError(f"escalate: a channel appears once per escalation ({', '.join(repeated)})")
        return self

    def escalation(self) -> Escalation:
        return Escalation(tuple(EscalationStep(s.after, tuple(s.notify)) for s in self.escalate))
