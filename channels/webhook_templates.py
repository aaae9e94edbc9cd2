"""Webhook body templates: one adapter speaks PagerDuty, Teams, Discord, Mattermost, Google Chat...

Templates are Jinja2 in an immutable sandbox (https://jinja.palletsprojects.com/en/3.1.x/sandbox/):
configuration is trusted more than notification text, but a template still must not reach
Python internals or mutate what it is given. ``StrictUndefined`` turns a misspelt variable into an
error instead of an empty string. Autoescaping is off (the output is JSON, not HTML); the
``tojson`` filter writes any value as a JSON literal, quotes and escapes included, so notification
text can never break out of a string::

    {"text": {{ subject | tojson }}, "labels": {{ labels | tojson }}}

Variables (docs/channels-webhook.md): ``notification_id``, ``idempotency_key``, ``severity``,
``subject``, ``body``, ``source``, ``recipients`` (list), ``labels`` (dict), ``created_at`` (ISO 8601
UTC, ``Z``), ``attempt``, ``provider_state``, ``drill`` and ``options`` (the channel's ``options``).

Errors: :class:`TemplateError` (a :class:`~channels.base.ChannelConfigError`) at configuration
load, from :func:`compile_template` and :func:`check_template`; at send time a template that
fails or renders invalid JSON is a permanent :class:`~channels.base.ChannelError`. Messages name
the template line and never quote option values (a routing key is a credential).
"""

from __future__ import annotations

import dataclasses
import json
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from channels.base import ChannelConfigError, ChannelError, OutboundMessage

JSON_CONTENT_TYPE = "application/json"
PRESETS = ("pagerduty", "teams")
_FILENAME = "<template>"


class TemplateError(ChannelConfigError):
    """The webhook body template is unusable."""


class Template:
    """A compiled body template (build one with :func:`compile_template` or :func:`load_preset`)."""

    def __init__(self, compiled: jinja2.Template, name: str) -> None:
        self._compiled = compiled
        self.name = name

    def render(self, context: Mapping[str, Any]) -> str:
        return self._compiled.render(context)


def _tojson(value: Any) -> str:
    # Jinja's own tojson HTML-escapes <>&' for <script> blocks; a webhook body wants plain JSON.
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises here, naming the missing variable
    return json.dumps(value, ensure_ascii=False)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    env.filters["tojson"] = _tojson
    return env


_ENV = _environment()


def compile_template(source: str, *, name: str = "template") -> Template:
    """Compile ``source``; a syntax error is a :class:`TemplateError` naming the line."""
    try:
        return Template(_ENV.from_string(source), name)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{name}: line {exc.lineno}: {exc.message}") from None


def load_preset(preset: str) -> Template:
    """A shipped template by name (``pagerduty``, ``teams``): files in ``channels/presets/``."""
    if preset not in PRESETS:
        raise TemplateError(f"unknown webhook preset {preset!r}; presets: {', '.join(PRESETS)}")
    source = resources.files("channels.presets").joinpath(f"{preset}.json.j2").read_text("utf-8")
    return compile_template(source, name=f"preset {preset}")


def template_for(source: str | None, preset: str | None) -> Template | None:
    """The channel's template from its ``template`` or ``preset`` setting (at most one)."""
    if source is not None and preset is not None:
        raise TemplateError("give either a template or a preset, not both")
    if preset is not None:
        return load_preset(preset)
    return None if source is None else compile_template(source)


def template_context(message: OutboundMessage, options: Mapping[str, str]) -> dict[str, Any]:
    """The variables a template sees for ``message``."""
    return {"notification_id": message.notification_id, **message_fields(message), "options": dict(options)}


def message_fields(message: OutboundMessage) -> dict[str, Any]:
    """What a webhook says about a message, in the order the versioned body lists it (after its id)."""
    return {
        "idempotency_key": message.idempotency_key,
        "severity": message.severity,
        "subject": message.subject,
        "body": message.body,
        "source": message.source,
        "recipients": list(message.recipients),
        "labels": dict(message.labels),
        "created_at": message.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "attempt": message.attempt,
        "provider_state": message.provider_state,
        "drill": message.drill,
    }


def is_json(content_type: str) -> bool:
    """Whether bodies of ``content_type`` must parse as JSON (``application/json``, ``*+json``)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON_CONTENT_TYPE or media.endswith("+json")


#: what a template can raise while rendering (RecursionError: a macro that calls itself for ever)
_RENDER_ERRORS = (jinja2.TemplateError, ArithmeticError, LookupError, RecursionError, TypeError, ValueError)


def render_template(
    template: Template,
    message: OutboundMessage,
    *,
    options: Mapping[str, str] | None = None,
    content_type: str = JSON_CONTENT_TYPE,
) -> bytes:
    """The body for ``message``; a failure is a permanent :class:`ChannelError` with the reason."""
    options = options or {}
    return _render(template, template_context(message, options), options, content_type)


def _render(
    template: Template, context: Mapping[str, Any], options: Mapping[str, str], content_type: str
) -> bytes:
    try:
        text = template.render(context)
    except _RENDER_ERRORS as exc:
        reason = _redact(_describe(exc), options)
        raise ChannelError(f"{template.name}: {reason}", permanent=True) from None
    if is_json(content_type):
        _check_json(template.name, text)
    return text.encode("utf-8")


def _check_json(name: str, text: str) -> None:
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg and the position only: the document itself may carry a routing key.
        raise ChannelError(
            f"{name}: rendered body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            permanent=True,
        ) from None


def sample_message() -> OutboundMessage:
    """A representative notification that :func:`check_template` renders at configuration load.

    Its texts and labels carry quotes and backslashes, as notifications do, so a value written into
    a JSON string without ``tojson`` fails the check instead of letting a label inject keys later.
    """
    return OutboundMessage(
        notification_id="01HXAMPLE0000000000000000",
        idempotency_key="sample:check",
        severity="critical",
        subject='Sample "subject" with <markup> & quotes',
        body="Line one\nLine two \\ with a backslash",
        created_at=datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
        source="backchannel-check",
        recipients=("oncall@example.com",),
        labels={"host": 'db1 "primary"', "team": "data\\ops"},
        provider_state="outage",
    )


def check_template(
    template: Template,
    *,
    options: Mapping[str, str] | None = None,
    content_type: str = JSON_CONTENT_TYPE,
) -> None:
    """Render against :func:`sample_message` for every severity; raise :class:`TemplateError` if any fails."""
    options = options or {}
    for severity in ("critical", "high", "warning", "info"):
        message = dataclasses.replace(sample_message(), severity=severity, drill=severity == "info")
        context = template_context(message, options)
        context["labels"] = _ProbingLabels(context["labels"])
        try:
            _render(template, context, options, content_type)
        except ChannelError as exc:
            raise TemplateError(str(exc)) from None


#: what the check's labels answer for a label the sample does not have
PROBE = 'probe "quoted" \\ value'


class _ProbingLabels(dict[str, str]):
    """The sample's labels for :func:`check_template`, whose ``get`` answers a label it does not
    have with :data:`PROBE` (quotes and a backslash), default or not: a template writing
    ``labels.get("alertname")`` into a JSON string without ``tojson`` fails the check, as it would
    fail (or let the label inject keys) when a notification carries that label. ``tojson`` of the
    whole dict writes only the labels the sample has."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key, PROBE)

    def __missing__(self, key: str) -> Any:
        """``labels.instance`` or ``labels["instance"]``: the sample lacks it, and so will many a
        notification, whose delivery would then fail for good. Named so, not as this class."""
        have = ", ".join(sorted(self))
        raise jinja2.UndefinedError(
            f"labels has no {key!r} (the check's sample has {have}); a notification may lack it too: "
            f"read it with labels.get({key!r}) or labels.get({key!r}, 'default')"
        )


def _describe(exc: BaseException) -> str:
    line = next(
        (f.lineno for f in reversed(traceback.extract_tb(exc.__traceback__)) if f.filename == _FILENAME),
        None,
    )
    where = f"line {line}: " if line is not None else ""
    detail = exc.message if isinstance(exc, jinja2.TemplateError) and exc.message else str(exc)
    return f"{where}{detail or type(exc).__name__}"


def _redact(text: str, options: Mapping[str, str]) -> str:
    for value in sorted(options.values(), key=len, reverse=True):
        if value:
            text = text.replace(value, "[redacted]")
    return text
