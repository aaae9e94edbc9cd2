"""``backchannel routes test`` and ``routes show``: check a policy before deploying it.

``routes test`` builds a notification from the command line, routes it as the daemon would in
the given provider state at the given time, and prints the matched route(s), the plan and the
people each backup channel would reach (like Alertmanager's ``amtool config routes test``).
``routes show`` draws the route tree. :func:`add_arguments` declares both commands' options.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import cast

from daemon.build import primary_channels
from daemon.config import Config, ConfigError, load_config
from daemon.config_directory import build_directory
from daemon.config_routes import build_policy
from daemon.configbase import format_duration
from daemon.core.directory import Directory, readdress
from daemon.core.model import Escalation, Mode, Notification, ProviderState, Severity
from daemon.core.routing import Action, Route, matching_routes, plan_in_state, walk
from daemon.rendering import audiences

EX_CONFIG = 78  # as daemon.cli: a configuration error, so systemd stops restarting


def add_arguments(test: argparse.ArgumentParser) -> None:
    """The options of ``routes test`` (``-c`` is the caller's, as for every command)."""
    test.add_argument("--severity", choices=[s.value for s in Severity], default="critical")
    test.add_argument("--source", default="api")
    test.add_argument("--label", action="append", default=[], metavar="NAME=VALUE")
    test.add_argument("--recipient", action="append", default=[], metavar="ADDRESS")
    test.add_argument("--mail-from", default=None, metavar="ADDRESS")
    test.add_argument("--state", choices=[s.value for s in ProviderState], default="outage")
    test.add_argument(
        "--in-force", choices=["healthy", "outage"], default="healthy", help="mode under unknown/credentials"
    )
    test.add_argument("--at", type=_instant, default=None, help="ISO 8601 time (default: now)")


def routes_test(args: argparse.Namespace) -> int:
    """Print what the policy in ``args.config`` does with the described notification."""
    loaded = _load(args)
    if loaded is None:
        return EX_CONFIG
    config, routes, directory = loaded
    at: datetime = args.at or datetime.now(UTC)
    note = _notification(args, at)
    state, in_force = ProviderState(args.state), cast(Mode, args.in_force)
    found = matching_routes(note, routes, at)
    plan = plan_in_state(note, state, in_force, routes, at)
    print(f"at {at.isoformat()}, provider {state.value}: route {plan.route}")
    for other in found[1:]:
        print(f"  also matches (continue): {other.name}")
    if plan.defer:
        print(f"plan ({plan.mode}): defer until the provider's state changes")
        return 0
    if plan.escalation is not None:
        print(f"plan ({plan.mode}): escalate until acknowledged")
        for step in plan.escalation.steps:
            for channel in step.channels:
                reach = _reach(config, directory, channel, note, found[0], at)
                print(f"  +{format_duration(step.after)} {channel}{reach}")
        return 0
    print(f"plan ({plan.mode}): {' -> '.join(plan.steps)}")
    for number, channel in enumerate(plan.steps, 1):
        print(f"  {number}. {channel}{_reach(config, directory, channel, note, found[0], at)}")
    return 0


def routes_show(args: argparse.Namespace) -> int:
    """Draw the route tree of ``args.config``."""
    loaded = _load(args)
    if loaded is None:
        return EX_CONFIG
    for depth, route in walk(loaded[1]):
        print(f"{'    ' * depth}{'└─ ' if depth else ''}{_describe(route)}")
        if route.active_in or route.muted_in or route.fallback:
            print(f"{'    ' * (depth + 1)}{_extras(route)}")
    return 0


def _load(args: argparse.Namespace) -> tuple[Config, tuple[Route, ...], Directory] | None:
    try:
        config = load_config(args.config)
        routes = build_policy(config.routes, config.windows, config.directory)
    except (ConfigError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return None
    return config, routes, build_directory(config.directory)


def _notification(args: argparse.Namespace, at: datetime) -> Notification:
    labels = dict(_pair(text) for text in args.label)
    return Notification(
        id="routes-test",
        idempotency_key="routes-test",
        created_at=at,
        severity=Severity(args.severity),
        subject="routes test",
        source=args.source,
        recipients=tuple(args.recipient),
        labels=labels,
        mail_from=args.mail_from,
    )


def _reach(
    config: Config, directory: Directory, channel: str, note: Notification, route: Route, at: datetime
) -> str:
    """Where ``channel`` would send ``note``, as the dispatcher addresses it (daemon/rendering.py)."""
    kind = config.channels[channel].type
    audience = audiences(config, primary_channels(config)).get(channel)
    if audience is None:  # webhooks and the primary email channel: nobody the directory places
        return f" ({kind})"
    if not (audience.to_people and note.recipients):
        # fixed destinations (Slack targets, SMS recipients, email to) are not readdressed
        places = audience.destinations(note.recipients)
        default = "its webhook channel" if kind == "slack" else "nobody"
        return f" ({kind}): {', '.join(places) or default}"
    readdressed = readdress(note.recipients, audience.kind, directory, at, route.fallback)
    found = readdressed.resolution
    places = audience.destinations(readdressed.recipients)
    text = f" ({kind}): {', '.join(found.people) or 'nobody'} -> {', '.join(places) or 'no targets'}"
    if found.unknown:
        text += f"; unknown recipients: {', '.join(found.unknown)}"
        text += f" (fallback {route.fallback})" if route.fallback else " (no fallback)"
    if found.unreachable:
        text += f"; no {kind} address: {', '.join(found.unreachable)}"
    return text


def _describe(route: Route) -> str:
    flow = "continue" if route.continue_ else ""
    actions = f"healthy: {describe_action(route.healthy)} | outage: {describe_action(route.outage)}"
    for state in ("unknown", "credentials"):
        value = getattr(route, state)
        actions += "" if value == "inherit" else f" | {state}: {describe_action(value)}"
    return " ".join(p for p in (route.name, f"[{route.matcher.describe()}]", actions, flow) if p)


def _extras(route: Route) -> str:
    parts = [f"active in {', '.join(w.name for w in route.active_in)}"] if route.active_in else []
    if route.muted_in:
        exempt = ",".join(sorted(s.value for s in route.mute_exempt))
        parts.append(
            f"muted in {', '.join(w.name for w in route.muted_in)}" + (f" except {exempt}" if exempt else "")
        )
    parts += [f"fallback {route.fallback}"] if route.fallback else []
    return "; ".join(parts)


def describe_action(action: Action) -> str:
    """``defer``, ``a, b`` (failover order) or ``escalate +0s a; +5m b, c``."""
    if action is None:
        return "defer"
    if isinstance(action, Escalation):
        steps = (f"+{format_duration(s.after)} {', '.join(s.channels)}" for s in action.steps)
        return "escalate " + "; ".join(steps)
    return ", ".join(action)


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _instant(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)
