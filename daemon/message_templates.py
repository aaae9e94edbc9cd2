"""Message templates: the subject and text a notification shows, per channel and per route.

Every channel formats a message its own way (Slack blocks, an SMS line, a text email) from the
message's ``subject`` and ``body``; a template replaces those two before the channel formats them.
A route's template for a channel (``templates:``) wins over the channel's own
(``message_template:``); neither: the notification's text.
(Webhook *bodies* have their own JSON templates: ``channels/webhook_templates.py``.)

Templates are Jinja2 in an immutable sandbox, as the webhook templates are: configuration is
trusted more than notification text, but a template still must not reach Python internals.
``StrictUndefined`` turns a misspelt variable into an error at configuration load, where each
template is compiled and rendered once against a sample notification; a label the notification
lacks reads as ``""`` (labels vary per notification, so a missing one is not a mistake).

Variables (docs/templates.md): ``notification_id``, ``severity``, ``subject``, ``body``,
``source``, ``recipients`` (list), ``labels`` (mapping), ``created_at`` (ISO 8601 UTC), ``route``,
``mode``, ``provider_state``, ``attempt``, ``drill``.

A template that fails at send time (a filter meeting an unexpected value, a ``str.format`` naming
a label the notification lacks) must not cost the notification: :func:`apply` falls back to the
untemplated text, whatever the error, and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

log = logging.getLogger(__name__)

#: what every template may use, with the sample values a template is checked against at load
SAMPLE: Mapping[str, Any] = {
    "notification_id": "01J0SAMPLE000000000000000",
    "severity": "critical",
    "subject": "Disk full on db-1",
    "body": "The disk /var/lib/postgresql is 100% full.",
    "source": "alertmanager",
    "recipients": ["ops@example.com"],
    "created_at": "2024-01-01T00:00:00Z",
    "route": "default",
    "mode": "outage",
    "provider_state": "outage",
    "attempt": 1,
    "drill": False,
}


class TemplateError(ValueError):
    """The message template is unusable."""


class Labels(dict[str, str]):
    """A notification's labels; one it lacks reads as ``""`` rather than failing the send."""

    def __missing__(self, key: str) -> str:
        return ""


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """A compiled pair; ``None`` keeps that part of the notification as it is."""

    subject: jinja2.Template | None
    body: jinja2.Template | None

    def render(self, context: Mapping[str, Any], subject: str, body: str) -> tuple[str, str]:
        new_subject = subject if self.subject is None else " ".join(self.subject.render(context).split())
        new_body = body if self.body is None else self.body.render(context).strip("\n")
        return new_subject, new_body


#: errors a template raises because of the values it met, not because it is wrong
#: (LookupError: ``"{team}".format(**labels)`` on a notification without that label)
_DATA_ERRORS = (ArithmeticError, LookupError, TypeError, ValueError)

_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)


def compile_pair(subject: str | None, body: str | None) -> MessageTemplate:
    """Compile and try both parts on the sample; errors name the part and the template line."""
    template = MessageTemplate(_compile(subject, "subject"), _compile(body, "body"))
    sample = dict(SAMPLE, labels=Labels(team="db"))
    for part, compiled in (("subject", template.subject), ("body", template.body)):
        if compiled is None:
            continue
        try:
            compiled.render(sample)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{part}: {exc.message or exc}") from None
        except RecursionError:
            raise TemplateError(f"{part}: maximum recursion depth exceeded") from None
        except _DATA_ERRORS:
            pass  # depends on the values, not the template: the sample proves nothing either way
    return template


def _compile(source: str | None, part: str) -> jinja2.Template | None:
    if source is None:
        return None
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{part}: line {exc.lineno}: {exc.message}") from None


def context(
    *,
    notification_id: str,
    severity: str,
    subject: str,
    body: str,
    source: str,
    recipients: tuple[str, ...],
    labels: Mapping[str, str],
    created_at: datetime,
    route: str,
    mode: str,
    provider_state: str,
    attempt: int,
    drill: bool,
) -> dict[str, Any]:
    return {
        "notification_id": notification_id,
        "severity": severity,
        "subject": subject,
        "body": body,
        "source": source,
        "recipients": list(recipients),
        "labels": Labels(labels),
        "created_at": created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "route": route,
        "mode": mode,
        "provider_state": provider_state,
        "attempt": attempt,
        "drill": drill,
    }


def apply(
    template: MessageTemplate, values: Mapping[str, Any], *, subject: str, body: str, where: str
) -> tuple[str, str]:
    """The templated subject and body; on any render error, the untemplated ones (logged)."""
    try:
        return template.render(values, subject, body)
    except Exception as exc:  # whatever a template does wrong, the notification still goes
        log.warning(
            "template %s failed, sending the notification's own text: %r",
            where,
            exc,
            extra={
                "event": "template.failed",
                "template": where,
                "notification_id": values.get("notification_id"),
            },
        )
        return subject, body


@dataclass(frozen=True, slots=True)
class TemplateBook:
    """Every configured template: a route's for a channel wins over the channel's own."""

    by_channel: Mapping[str, MessageTemplate] = field(default_factory=dict)
    by_route: Mapping[str, Mapping[str, MessageTemplate]] = field(default_factory=dict)

    def find(self, route: str, channel: str) -> tuple[MessageTemplate, str] | None:
        """The template for ``channel`` on ``route`` and where it is configured, if any."""
        own = self.by_route.get(route, {}).get(channel)
        if own is not None:
            return own, f"routes.{route}.templates.{channel}"
        shared = self.by_channel.get(channel)
        return None if shared is None else (shared, f"channels.{channel}.message_template")
