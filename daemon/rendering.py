"""Rendering: one claimed delivery becomes the :class:`OutboundMessage` a channel sends.

The dispatcher decides when and where; this module decides what the channel is handed. Kept
apart from the dispatcher so what a message says (recipients mapped through the directory,
templates per route) can grow without touching the send loop.

Recipients: a backup channel that sends to the notification's people (its :class:`Audience`
says so) is handed the people's Slack ids, phone numbers or backup mailboxes instead of their
email addresses (:func:`daemon.core.directory.readdress`), with groups and rotations resolved at
send time and the route's ``fallback`` standing in for addresses the directory does not know.
What the directory could not place is reported once per delivery, on its first attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter

from channels.base import OutboundMessage
from daemon import message_templates as templates
from daemon.clock import Clock
from daemon.config import Config
from daemon.config_channels import EmailChannelConfig, SlackChannelConfig, SmsChannelConfig
from daemon.core.directory import Audience, Directory, Readdressed, readdress
from daemon.core.model import Notification, ProviderState
from daemon.core.routing import Route, walk
from daemon.drills import SOURCE as DRILL_SOURCE
from daemon.store.values import Claimed

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Unresolved:
    """Recipients of one delivery that the directory could not turn into targets."""

    notification_id: str
    channel: str
    route: str
    #: addresses nobody in the directory has (sent to ``fallback`` when the route has one)
    unknown: tuple[str, ...]
    #: people without an address of the channel's kind
    unreachable: tuple[str, ...]
    fallback: str | None


class People:
    """Maps a notification's recipients to the people's targets on each backup channel.

    The directory, the routes and the audiences are read through callables, so a configuration
    reload (which swaps them in the composition root) applies to the next send.
    """

    def __init__(
        self,
        audiences: Callable[[], Mapping[str, Audience]],
        directory: Callable[[], Directory],
        routes: Callable[[], Sequence[Route]],
    ) -> None:
        self.audiences = audiences
        self._directory = directory
        self._routes = routes

    @property
    def directory(self) -> Directory:
        return self._directory()

    def readdress(
        self, channel: str, notification: Notification, route: str, now: datetime
    ) -> Readdressed | None:
        """The recipients ``channel`` should get at ``now``; None when it keeps them as they are."""
        audience = self.audiences().get(channel)
        if audience is None or not audience.to_people:
            return None
        return readdress(notification.recipients, audience.kind, self._directory(), now, self.fallback(route))

    def fallback(self, route: str) -> str | None:
        """The fallback of the route named ``route``; None when it has none or is gone (reloaded)."""
        return next((r.fallback for _, r in walk(self._routes()) if r.name == route), None)


class Renderer:
    """Builds the message for one send attempt of one claimed delivery on one channel."""

    def __init__(
        self,
        state: Callable[[], ProviderState],
        *,
        people: People | None = None,
        clock: Clock | None = None,
        on_unresolved: Callable[[Unresolved], None] | None = None,
        book: Callable[[], templates.TemplateBook] | None = None,
    ) -> None:
        if people is not None and clock is None:
            raise ValueError("mapping recipients to people needs the clock (rotations hand over)")
        self._state = state
        self._people = people
        self._clock = clock
        self._on_unresolved = on_unresolved
        self._templates = book or templates.TemplateBook

    def render(self, channel: str, claimed: Claimed) -> OutboundMessage:
        n = claimed.notification
        message = OutboundMessage(
            notification_id=n.id,
            idempotency_key=n.idempotency_key,
            severity=n.severity.value,
            subject=n.subject,
            body=n.body,
            created_at=n.created_at,
            source=n.source,
            recipients=self._recipients(channel, claimed),
            labels=n.labels,
            attempt=claimed.delivery.attempts,
            provider_state=self._state().value,
            raw=n.raw,
            mail_from=n.mail_from,
            drill=n.source == DRILL_SOURCE,
            acknowledgeable=claimed.ack_code is not None,
            ack_code=claimed.ack_code,
        )
        return self._templated(channel, claimed, message)

    def _templated(self, channel: str, claimed: Claimed, message: OutboundMessage) -> OutboundMessage:
        found = self._templates().find(claimed.delivery.route, channel)
        if found is None:
            return message
        template, where = found
        values = templates.context(
            notification_id=message.notification_id,
            severity=message.severity,
            subject=message.subject,
            body=message.body,
            source=message.source,
            recipients=claimed.notification.recipients,
            labels=message.labels,
            created_at=message.created_at,
            route=claimed.delivery.route,
            mode=claimed.delivery.mode,
            provider_state=message.provider_state,
            attempt=message.attempt,
            drill=message.drill,
        )
        subject, body = templates.apply(
            template, values, subject=message.subject, body=message.body, where=where
        )
        return replace(message, subject=subject, body=body)

    def _recipients(self, channel: str, claimed: Claimed) -> tuple[str, ...]:
        if self._people is None or self._clock is None:
            return claimed.notification.recipients
        route = claimed.delivery.route
        found = self._people.readdress(channel, claimed.notification, route, self._clock.now())
        if found is None:
            return claimed.notification.recipients
        # Reported on the first attempt only: retries would repeat the same news.
        if found.unresolved and claimed.delivery.attempts <= 1 and self._on_unresolved is not None:
            resolution = found.resolution
            self._on_unresolved(
                Unresolved(
                    claimed.notification.id,
                    channel,
                    route,
                    resolution.unknown,
                    resolution.unreachable,
                    self._people.fallback(route),
                )
            )
        return found.recipients


def audiences(config: Config, primary: frozenset[str]) -> dict[str, Audience]:
    """Each backup channel's :class:`Audience`, from its configuration (see docs/directory.md).

    Slack opts in with ``dm_recipients``; an SMS channel without ``recipients`` and a backup email
    channel without ``to`` have nobody else to send to, so they send to the people. A channel with
    fixed destinations keeps them. Webhooks and the primary email channel address nobody.
    """
    found: dict[str, Audience] = {}
    for name, cfg in config.channels.items():
        if isinstance(cfg, SlackChannelConfig):
            found[name] = Audience("slack", cfg.dm_recipients, tuple(cfg.targets))
        elif isinstance(cfg, SmsChannelConfig):
            found[name] = Audience("sms", not cfg.recipients, tuple(cfg.recipients))
        elif isinstance(cfg, EmailChannelConfig) and name not in primary:
            found[name] = Audience("email", not cfg.to, tuple(cfg.to))
    return found


def template_book(config: Config) -> templates.TemplateBook:
    """Every message template the configuration has (docs/templates.md)."""
    own = {n: c.message_template.compiled() for n, c in config.channels.items() if c.message_template}
    return templates.TemplateBook(by_channel=own, by_route=config.templates())


def unresolved_reporter(registry: CollectorRegistry) -> Callable[[Unresolved], None]:
    """Reports recipients the directory could not place: a log event and a counter per channel."""
    counter = Counter(
        "backchannel_directory_unresolved",
        "Recipients the directory could not turn into a target, by reason (unknown, unreachable)",
        ["channel", "reason"],
        registry=registry,
    )

    def report(found: Unresolved) -> None:
        for reason, names in (("unknown", found.unknown), ("unreachable", found.unreachable)):
            if names:
                counter.labels(found.channel, reason).inc(len(names))
        log.warning(
            "%s via %s: the directory does not know %s; no %s target for %s%s",
            found.notification_id,
            found.channel,
            ", ".join(found.unknown) or "nobody",
            found.channel,
            ", ".join(found.unreachable) or "nobody",
            f" (unknown ones went to {found.fallback})" if found.unknown and found.fallback else "",
            extra={
                "event": "directory.unresolved",
                "notification_id": found.notification_id,
                "channel": found.channel,
                "route": found.route,
                "unknown": list(found.unknown),
                "unreachable": list(found.unreachable),
                "fallback": found.fallback,
            },
        )

    return report
