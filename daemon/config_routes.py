"""Configuration of the policy: routes (a tree) and time windows.

Field reference: ``docs/configuration.md`` (routes) and ``docs/policies.md`` (the tree, matchers,
windows). :func:`build_policy` turns the validated models into the pure core's
:class:`~daemon.core.routing.Route` tree, resolving window names and checking fallbacks against the
directory (:mod:`daemon.config_directory`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    field_validator,
)

from daemon.config_directory import DirectoryConfig
from daemon.config_escalation import ChannelRef, EscalateConfig
from daemon.config_templates import MessageTemplateConfig
from daemon.configbase import LocatedError, Model, TimeZoneName
from daemon.core.model import Severity
from daemon.core.routing import LABEL_PREFIX, Condition, Matcher, Route
from daemon.core.timewindows import TimeWindow, parse_clock, parse_days
from daemon.message_templates import MessageTemplate
from daemon.yamlsource import format_path

#: the SMTP intake's labels of ``label_headers`` (daemon/intake/smtp_policy.py), named in lower case
HEADER_PREFIX = "header:"


def _action_tag(value: Any) -> str:
    """The action's kind: from the YAML when validating, from the model when serialising."""
    if isinstance(value, str):
        return "defer"
    return "escalate" if isinstance(value, dict | EscalateConfig) else "channels"


def _clock(value: Any) -> time:
    if not isinstance(value, str):
        # YAML 1.1 reads an unquoted 08:00 as the number 480 (base 60)
        raise ValueError('expected a quoted time such as "08:00"')
    return parse_clock(value)


def _condition(value: str) -> str:
    condition = Condition.parse(value)
    if condition.name == "severity" and not any(condition.admits(s.value) for s in Severity):
        # a misspelt severity (severity=crit, severity=~crit, anchored) would never match, silently
        known = ", ".join(s.value for s in Severity)
        raise ValueError(f"{value!r} compares with no severity (severities: {known})")
    _header_label(condition.name.removeprefix(LABEL_PREFIX))
    return value


def _header_label(name: str) -> None:
    """The SMTP intake names header labels in lower case (mail header names are case-insensitive):
    ``header:X-Team`` would never match, silently."""
    if name.startswith(HEADER_PREFIX) and name != name.lower():
        raise ValueError(f"header labels are lower case: {name.lower()!r}, not {name!r}")


def _header_labels(labels: dict[str, str]) -> dict[str, str]:
    for name in labels:
        _header_label(name)
    return labels


#: channel names tried in order, an escalation, or "defer": hold until the provider's state changes
Action = Annotated[
    Annotated[Literal["defer"], Tag("defer")]
    | Annotated[list[ChannelRef], Tag("channels"), Field(min_length=1)]
    | Annotated[EscalateConfig, Tag("escalate")],
    Discriminator(_action_tag),
]
ClockTime = Annotated[time, BeforeValidator(_clock)]
MatcherText = Annotated[str, AfterValidator(_condition)]
MatchLabels = Annotated[dict[str, str], AfterValidator(_header_labels)]


# --- windows ------------------------------------------------------------------------------------


class WindowConfig(Model):
    """Weekdays and a span of local time.

    ``{timezone: Europe/Berlin, days: [mon-fri], from: "08:00", to: "18:00"}``
    """

    timezone: TimeZoneName = "UTC"
    days: list[str] = Field(default_factory=lambda: ["mon-sun"], min_length=1)
    from_: ClockTime = Field(time(0), alias="from")
    to: ClockTime = time(0)

    def window(self, name: str) -> TimeWindow:
        return TimeWindow(name, ZoneInfo(self.timezone), parse_days(self.days), self.from_, self.to)

    @field_validator("days")
    @classmethod
    def _known_days(cls, days: list[str]) -> list[str]:
        parse_days(days)  # its ValueError names the bad day
        return days


# --- routes -------------------------------------------------------------------------------------


class MatchConfig(Model):
    severity: list[Severity] | None = Field(None, min_length=1)
    source: list[str] | None = Field(None, min_length=1)
    labels: MatchLabels = Field(default_factory=dict)
    #: Alertmanager-style: ``team=~db|infra``, ``severity!=info``, ``recipient=ops@example.com``
    matchers: list[MatcherText] = Field(default_factory=list)

    def matcher(self) -> Matcher:
        return Matcher(
            severities=None if self.severity is None else frozenset(self.severity),
            sources=None if self.source is None else frozenset(self.source),
            labels=dict(self.labels),
            conditions=tuple(Condition.parse(m) for m in self.matchers),
        )


class ChildRouteConfig(Model):
    """A nested route: tried only once its parent matched; omitted actions are the parent's."""

    name: str | None = Field(None, min_length=1)
    match: MatchConfig = Field(default_factory=MatchConfig)
    healthy: Action | None = None
    outage: Action | None = None
    unknown: Action | None = None
    credentials: Action | None = None
    continue_: bool = Field(False, alias="continue")
    routes: list[ChildRouteConfig] = Field(default_factory=list)
    active_in: list[str] = Field(default_factory=list)
    muted_in: list[str] = Field(default_factory=list)
    #: severities that still take this route inside its muted_in windows
    mute_exempt: list[Severity] = Field(default_factory=list)
    #: a directory person or group for recipients the directory does not know
    fallback: str | None = None
    #: an email catch-up, once email recovers, of what reached people elsewhere (default: the parent's)
    catch_up: bool | None = None
    #: message templates by channel name for what this route sends (docs/templates.md); children
    #: inherit their parent's for the channels they do not name
    templates: dict[ChannelRef, MessageTemplateConfig] = Field(default_factory=dict)

    def route_name(self, index: int, parent: str | None) -> str:
        return self.name or (f"{parent}/{index}" if parent else f"route-{index}")

    def route(
        self,
        index: int,
        windows: Mapping[str, TimeWindow] | None = None,
        parent: Route | None = None,
        loc: tuple[str | int, ...] = (),
    ) -> Route:
        """The core's route; ``loc`` is this route's path in the configuration, for its errors."""
        name = self.route_name(index, parent.name if parent else None)
        route = Route(
            name=name,
            matcher=self.match.matcher(),
            healthy=_action(self.healthy, parent.healthy if parent else None),
            outage=_action(self.outage, parent.outage if parent else None),
            unknown=_action(self.unknown, parent.unknown if parent else "inherit"),
            credentials=_action(self.credentials, parent.credentials if parent else "inherit"),
            continue_=self.continue_,
            active_in=_windows(self.active_in, windows or {}, (*loc, "active_in")),
            muted_in=_windows(self.muted_in, windows or {}, (*loc, "muted_in")),
            mute_exempt=frozenset(self.mute_exempt),
            fallback=self.fallback or (parent.fallback if parent else None),
            catch_up=_inherit(self.catch_up, parent.catch_up if parent else True),
        )
        children = tuple(c.route(i, windows, route, (*loc, "routes", i)) for i, c in enumerate(self.routes))
        return dataclasses.replace(route, routes=children)


class RouteConfig(ChildRouteConfig):
    """A top-level route: both main actions are required."""

    healthy: Action
    outage: Action


def _action(value: Any, inherited: Any) -> Any:
    if value is None:
        return inherited
    if isinstance(value, EscalateConfig):
        return value.escalation()
    return None if value == "defer" else tuple(value)


def _inherit(value: bool | None, inherited: bool) -> bool:
    return inherited if value is None else value


def _windows(
    names: Sequence[str], windows: Mapping[str, TimeWindow], loc: tuple[str | int, ...]
) -> tuple[TimeWindow, ...]:
    unknown = [n for n in names if n not in windows]
    if unknown:
        known = ", ".join(windows) or "none"
        raise LocatedError(f"unknown window(s) {', '.join(unknown)} (windows: {known})", loc)
    return tuple(windows[n] for n in names)


def build_policy(
    routes: Sequence[RouteConfig], windows: Mapping[str, WindowConfig], directory: DirectoryConfig
) -> tuple[Route, ...]:
    """The route tree for the core; raises :class:`LocatedError` naming an unknown window or
    fallback, or a repeated route name, at its path (``routes[0].routes[1].name``)."""
    resolved = {name: w.window(name) for name, w in windows.items()}
    tree = tuple(r.route(i, resolved, None, ("routes", i)) for i, r in enumerate(routes))
    check_tree(tree, routes, directory)
    return tree


def route_templates(
    routes: Sequence[ChildRouteConfig],
    parent: str | None = None,
    inherited: Mapping[str, MessageTemplate] | None = None,
) -> dict[str, dict[str, MessageTemplate]]:
    """Each route's compiled templates by channel, its parent's filled in; routes without any left out."""
    found: dict[str, dict[str, MessageTemplate]] = {}
    for index, config in enumerate(routes):
        name = config.route_name(index, parent)
        own = dict(inherited or {}) | {ch: t.compiled() for ch, t in config.templates.items()}
        if own:
            found[name] = own
        found |= route_templates(config.routes, name, own)
    return found


def check_tree(
    tree: Sequence[Route], configs: Sequence[ChildRouteConfig], directory: DirectoryConfig
) -> None:
    """Route names unique across the tree, a last route without windows, fallbacks that exist."""
    from daemon.core.routing import walk

    first: dict[str, tuple[str | int, ...]] = {}
    known = set(directory.people) | set(directory.groups)
    for (_, route), (loc, config) in zip(walk(tree), _located(configs, ("routes",)), strict=True):
        if route.name in first:
            where = format_path(first[route.name])
            at = (*loc, "name") if config.name else loc
            raise LocatedError(f"duplicate route name {route.name!r} (also {where})", at)
        first[route.name] = loc
        if config.fallback is not None and config.fallback not in known:
            raise LocatedError(f"fallback {config.fallback!r} is no person or group", (*loc, "fallback"))
    if tree and (tree[-1].active_in or tree[-1].muted_in):
        field = "active_in" if tree[-1].active_in else "muted_in"
        message = "the last route is the catch-all: it cannot have active_in or muted_in windows"
        raise LocatedError(message, ("routes", len(tree) - 1, field))


def _located(
    configs: Sequence[ChildRouteConfig], loc: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], ChildRouteConfig]]:
    """Every route's configuration with its path, parents before children (as ``walk``)."""
    return [
        item
        for i, c in enumerate(configs)
        for item in [((*loc, i), c), *_located(c.routes, (*loc, i, "routes"))]
    ]
