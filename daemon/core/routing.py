"""Routing: a notification and the provider's mode in, a :class:`Plan` out. Pure.

Routes are tried in order; the first whose matcher accepts the notification decides. Each
route says what to do in each mode: a list of channels tried in order, or ``defer`` (hold
until the mode changes, then route again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from daemon.core.model import Mode, Notification, Plan, Severity


@dataclass(frozen=True, slots=True)
class Matcher:
    """All given criteria must hold; an empty matcher matches everything."""

    severities: frozenset[Severity] | None = None
    sources: frozenset[str] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def matches(self, notification: Notification) -> bool:
        if self.severities is not None and notification.severity not in self.severities:
            return False
        if self.sources is not None and notification.source not in self.sources:
            return False
        return all(notification.labels.get(k) == v for k, v in self.labels.items())

    @property
    def is_catch_all(self) -> bool:
        return self.severities is None and self.sources is None and not self.labels


#: A route's action in one mode: channel names in order, or None for ``defer``.
Action = tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    matcher: Matcher
    healthy: Action
    outage: Action

    def action(self, mode: Mode) -> Action:
        return self.healthy if mode == "healthy" else self.outage


class NoRouteError(LookupError):
    """No route matches this notification."""


def route_for(notification: Notification, routes: Sequence[Route]) -> Route:
    for route in routes:
        if route.matcher.matches(notification):
            return route
    raise NoRouteError(f"no route matches notification {notification.id}")


def plan_for(notification: Notification, mode: Mode, routes: Sequence[Route]) -> Plan:
    """The plan for ``notification`` while the provider is in ``mode``."""
    route = route_for(notification, routes)
    action = route.action(mode)
    if action is None:
        return Plan(route=route.name, mode=mode, defer=True)
    return Plan(route=route.name, mode=mode, steps=action)


def plans_for(notification: Notification, routes: Sequence[Route]) -> dict[Mode, Plan]:
    """Both modes' plans, so the store can pick the one in force when it commits."""
    return {mode: plan_for(notification, mode, routes) for mode in ("healthy", "outage")}
