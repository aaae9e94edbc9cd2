"""Routing: a notification, the provider's mode and the time in, a :class:`Plan` out. Pure.

Routes form a tree. At each level the routes are tried in order; a route applies when its
matcher accepts the notification and it is not outside its ``active_in`` windows nor inside its
``muted_in`` windows (a muted route still applies to the severities in ``mute_exempt``). When a
route applies, its children are tried the same way; if none applies, the route itself matches.
Children inherit their parent's matchers by construction (they are only tried once the parent
matched); the configuration fills in their actions from the parent's.

``continue`` (as in Alertmanager) keeps trying the following siblings after a match, so one
notification may match several routes. It still gets one plan per mode: the **first** matching
route's. The later matches are reported (``routes test``, logs), never merged, because a plan's
steps are a failover order, not a fan-out.

Each route says what to do in each mode: a list of channels tried in order, an
:class:`~daemon.core.model.Escalation` (steps in time until acknowledged), or ``defer`` (hold
until the mode changes, then route again). ``unknown`` and ``credentials`` may override the
action while those states overlay the mode in force; absent, the mode in force's action applies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from types import MappingProxyType
from typing import Literal

from daemon.core.model import (
    GROUP_ACKNOWLEDGED_LABEL,
    RESOLVES_LABEL,
    Escalation,
    Mode,
    Notification,
    Plan,
    ProviderState,
    Severity,
    mode_for,
)
from daemon.core.timewindows import TimeWindow

Op = Literal["=", "!=", "=~", "!~"]
#: condition names that read a notification's fields; any other name is a label
FIELDS = ("severity", "source", "mail_from", "recipient")
#: fields holding email addresses, which compare case-insensitively
ADDRESS_FIELDS = ("recipient", "mail_from")
LABEL_PREFIX = "label:"
_CONDITION = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.:/-]*)\s*(=~|!~|!=|=)\s*(.*?)\s*")


@dataclass(frozen=True, slots=True)
class Condition:
    """One Alertmanager-style matcher: ``team=db``, ``team=~db|infra``, ``severity!=info``.

    Regexes are anchored (the whole value must match), as in Alertmanager. A missing label
    reads as ``""``. ``recipient`` holds when any recipient matches; its negations hold when
    none does.
    """

    name: str
    op: Op
    value: str
    pattern: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, text: str) -> Condition:
        found = _CONDITION.fullmatch(text)
        if found is None:
            raise ValueError(
                f"not a matcher: {text!r} (expected name=value, name!=value, name=~re, name!~re)"
            )
        name, op, value = found.groups()
        value = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
        pattern = None
        if op in ("=~", "!~"):
            try:
                # addresses compare lowercased: a pattern written with capitals must still match
                pattern = re.compile(value, re.IGNORECASE if name in ADDRESS_FIELDS else 0)
            except re.error as exc:
                raise ValueError(f"invalid regex in {text!r}: {exc}") from None
        return cls(name, op, value, pattern)  # type: ignore[arg-type]  # op is one of Op by the regex

    def holds(self, notification: Notification) -> bool:
        hit = any(self._equal_or_match(v) for v in self._values(notification))
        return hit if self.op in ("=", "=~") else not hit

    def _values(self, notification: Notification) -> tuple[str, ...]:
        if self.name == "recipient":
            return tuple(r.lower() for r in notification.recipients) or ("",)
        if self.name == "severity":
            return (notification.severity.value,)
        if self.name == "source":
            return (notification.source,)
        if self.name == "mail_from":
            return ((notification.mail_from or "").lower(),)
        return (notification.labels.get(self.name.removeprefix(LABEL_PREFIX), ""),)

    def admits(self, actual: str) -> bool:
        """Whether ``actual`` equals (or matches) the value: what ``=`` or ``=~`` asks of it."""
        return self._equal_or_match(actual)

    def _equal_or_match(self, actual: str) -> bool:
        expected = self.value.lower() if self.name in ADDRESS_FIELDS else self.value
        if self.pattern is None:
            return actual == expected
        return self.pattern.fullmatch(actual) is not None

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


@dataclass(frozen=True, slots=True)
class Matcher:
    """All given criteria must hold; an empty matcher matches everything."""

    severities: frozenset[Severity] | None = None
    sources: frozenset[str] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    conditions: tuple[Condition, ...] = ()

    def matches(self, notification: Notification) -> bool:
        if self.severities is not None and notification.severity not in self.severities:
            return False
        if self.sources is not None and notification.source not in self.sources:
            return False
        if not all(notification.labels.get(k) == v for k, v in self.labels.items()):
            return False
        return all(c.holds(notification) for c in self.conditions)

    @property
    def is_catch_all(self) -> bool:
        return self.severities is None and self.sources is None and not self.labels and not self.conditions

    def describe(self) -> str:
        parts = (
            [f"severity in {','.join(sorted(s.value for s in self.severities))}"] if self.severities else []
        )
        parts += [f"source in {','.join(sorted(self.sources))}"] if self.sources else []
        parts += [f"{k}={v}" for k, v in self.labels.items()] + [str(c) for c in self.conditions]
        return " ".join(parts) or "everything"


#: A route's action in one mode: channel names in order, an escalation, or None for ``defer``.
Action = tuple[str, ...] | Escalation | None
#: the states that overlay the mode in force, and that a route may give actions of their own
OVERLAYS = (ProviderState.UNKNOWN, ProviderState.CREDENTIALS)
#: a route's plans while an overlay state is in force, by (state, mode in force)
Overrides = Mapping[tuple[ProviderState, Mode], Plan]
NO_OVERRIDES: Overrides = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    matcher: Matcher
    healthy: Action
    outage: Action
    #: overrides while these states overlay the mode in force; ``inherit`` keeps that mode's action
    unknown: Action | Literal["inherit"] = "inherit"
    credentials: Action | Literal["inherit"] = "inherit"
    continue_: bool = False
    routes: tuple[Route, ...] = ()
    active_in: tuple[TimeWindow, ...] = ()
    muted_in: tuple[TimeWindow, ...] = ()
    mute_exempt: frozenset[Severity] = frozenset()
    #: a directory person or group for recipients the directory does not know
    fallback: str | None = None
    #: whether people get an email catch-up of what reached them elsewhere once email recovers
    catch_up: bool = True

    def action(self, mode: Mode) -> Action:
        return self.healthy if mode == "healthy" else self.outage

    def override(self, state: ProviderState) -> Action | Literal["inherit"]:
        """The route's own action for an overlay ``state``, or ``inherit`` (the mode in force's)."""
        if state == ProviderState.UNKNOWN:
            return self.unknown
        return self.credentials if state == ProviderState.CREDENTIALS else "inherit"

    def applies_at(self, notification: Notification, now: datetime | None) -> bool:
        """Whether the time windows let this route take ``notification``; no ``now``: no windows."""
        if now is None:
            return True
        if self.active_in and not any(w.contains(now) for w in self.active_in):
            return False
        muted = any(w.contains(now) for w in self.muted_in)
        return not muted or notification.severity in self.mute_exempt


class NoRouteError(LookupError):
    """No route matches this notification."""


def matching_routes(
    notification: Notification, routes: Sequence[Route], now: datetime | None = None
) -> list[Route]:
    """Every route that matches, in order: more than one only through ``continue``."""
    found: list[Route] = []
    for route in routes:
        if not (route.matcher.matches(notification) and route.applies_at(notification, now)):
            continue
        found.extend(matching_routes(notification, route.routes, now) or [route])
        if not route.continue_:
            break
    return found


def route_for(notification: Notification, routes: Sequence[Route], now: datetime | None = None) -> Route:
    found = matching_routes(notification, routes, now)
    if not found:
        raise NoRouteError(f"no route matches notification {notification.id}")
    return found[0]


def plan_for(
    notification: Notification,
    mode: Mode,
    routes: Sequence[Route],
    now: datetime | None = None,
    state: ProviderState | None = None,
) -> Plan:
    """The plan for ``notification`` while the provider is in ``mode``; ``now`` for time windows;
    ``state``, an overlay (unknown, credentials) over ``mode``, for the route's action in it."""
    route = route_for(notification, routes, now)
    override = "inherit" if state is None else route.override(state)
    action = route.action(mode) if override == "inherit" else override
    return _plan(route.name, mode, action, _resolution(notification))


def plan_in_state(
    notification: Notification,
    state: ProviderState,
    in_force: Mode,
    routes: Sequence[Route],
    now: datetime | None = None,
) -> Plan:
    """The plan in ``state``, honouring a route's ``unknown``/``credentials`` override."""
    return plan_for(notification, mode_for(state, in_force), routes, now, state)


def plans_for(
    notification: Notification, routes: Sequence[Route], now: datetime | None = None
) -> dict[Mode, Plan]:
    """Both modes' plans (:func:`all_plans_for` has the overlay states' too)."""
    return all_plans_for(notification, routes, now)[0]


def all_plans_for(
    notification: Notification, routes: Sequence[Route], now: datetime | None = None
) -> tuple[dict[Mode, Plan], Overrides]:
    """Both modes' plans, and the route's plans in the overlay states it has actions for, so the
    store can pick the one in force when it commits (the process accepting need not know it).

    The route does not depend on the mode, so it is matched once (this runs for every accept).
    """
    route, resolution = route_for(notification, routes, now), _resolution(notification)
    plans: dict[Mode, Plan] = {
        mode: _plan(route.name, mode, route.action(mode), resolution) for mode in ("healthy", "outage")
    }
    if route.unknown == "inherit" and route.credentials == "inherit":
        return plans, NO_OVERRIDES
    return plans, {
        (state, mode): _plan(route.name, mode, action, resolution)
        for state in OVERLAYS
        if (action := route.override(state)) != "inherit"
        for mode in ("healthy", "outage")
    }


def _resolution(notification: Notification) -> bool:
    """Told once, never paged on a timer: a resolution, or a new version of a group someone took on."""
    return RESOLVES_LABEL in notification.labels or GROUP_ACKNOWLEDGED_LABEL in notification.labels


def told_once(plan: Plan) -> Plan:
    """The plan a resolution would have had: an escalation's channels as a failover list."""
    if plan.escalation is None:
        return plan
    return Plan(route=plan.route, mode=plan.mode, steps=plan.escalation.channels)


@lru_cache(maxsize=4096)
def _plan(route: str, mode: Mode, action: Action, resolution: bool = False) -> Plan:
    """``resolution``: an escalation's channels become a failover list: a resolution is told once, on
    the first channel that takes it, and never pages on a timer.

    A pure function of a few hashable values, and plans are immutable: each is made once and shared
    (this runs twice for every notification accepted; a new reload's routes are new keys).
    """
    if action is None:
        return Plan(route=route, mode=mode, defer=True)
    if isinstance(action, Escalation):
        plan = Plan(route=route, mode=mode, escalation=action)
        return told_once(plan) if resolution else plan
    return Plan(route=route, mode=mode, steps=action)


def channels_used(routes: Sequence[Route]) -> set[str]:
    """Every channel some route may send through, in any mode or state override."""
    used: set[str] = set()
    for _, route in walk(routes):
        for action in (route.healthy, route.outage, route.unknown, route.credentials):
            if isinstance(action, Escalation):
                used.update(action.channels)
            elif isinstance(action, tuple):
                used.update(action)
    return used


def overrides_any(routes: Sequence[Route]) -> bool:
    """Whether some route has actions of its own for an overlay state (unknown, credentials)."""
    return any(r.unknown != "inherit" or r.credentials != "inherit" for _, r in walk(routes))


def walk(routes: Sequence[Route], depth: int = 0) -> list[tuple[int, Route]]:
    """Every route with its depth, parents before children, for drawing and validation."""
    return [item for r in routes for item in [(depth, r), *walk(r.routes, depth + 1)]]
