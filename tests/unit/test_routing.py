"""Routing decisions: first matching route, per-mode actions, defer, matchers, the tree, windows."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from daemon.core.model import Mode, Notification, Plan, ProviderState, Severity
from daemon.core.routing import (
    Condition,
    Matcher,
    NoRouteError,
    Route,
    matching_routes,
    plan_for,
    plan_in_state,
    plans_for,
)
from daemon.core.timewindows import TimeWindow

ROUTES = (
    Route(
        "db",
        Matcher(labels={"team": "db"}, severities=frozenset({Severity.CRITICAL})),
        ("email",),
        ("sms", "hook"),
    ),
    Route(
        "critical", Matcher(severities=frozenset({Severity.CRITICAL, Severity.HIGH})), ("email",), ("hook",)
    ),
    Route("from-ci", Matcher(sources=frozenset({"ci"})), ("email",), None),
    Route("rest", Matcher(), ("email",), None),
)


def note(severity: Severity, source: str = "api", **labels: str) -> Notification:
    return Notification(
        "n1", "n1", datetime(2026, 1, 1, tzinfo=UTC), severity, "s", source=source, labels=labels
    )


@pytest.mark.parametrize(
    ("notification", "mode", "expected"),
    [
        (note(Severity.CRITICAL, team="db"), "outage", Plan("db", "outage", ("sms", "hook"))),
        (note(Severity.CRITICAL, team="web"), "outage", Plan("critical", "outage", ("hook",))),
        (note(Severity.HIGH), "healthy", Plan("critical", "healthy", ("email",))),
        (note(Severity.INFO, source="ci"), "outage", Plan("from-ci", "outage", defer=True)),
        (note(Severity.WARNING), "outage", Plan("rest", "outage", defer=True)),
        (note(Severity.WARNING), "healthy", Plan("rest", "healthy", ("email",))),
    ],
)
def test_first_matching_route_decides(notification: Notification, mode: Mode, expected: Plan) -> None:
    """The first route whose matcher accepts the notification gives the plan for the mode."""
    assert plan_for(notification, mode, ROUTES) == expected


def test_plans_for_gives_both_modes() -> None:
    """The store gets both plans so it can commit the one in force."""
    plans = plans_for(note(Severity.CRITICAL), ROUTES)
    assert plans["healthy"].steps == ("email",)
    assert plans["outage"].steps == ("hook",)


def test_no_route_is_an_error() -> None:
    """Without a catch-all, an unmatched notification raises rather than vanishing."""
    with pytest.raises(NoRouteError):
        plan_for(note(Severity.INFO), "healthy", ROUTES[:1])


def test_plan_must_defer_or_have_steps() -> None:
    """A plan with neither steps nor defer is refused."""
    with pytest.raises(ValueError, match="defers, has steps or escalates"):
        Plan("r", "healthy")


# --- matchers, the tree, continue, windows, per-state actions ----------------------------------

NIGHTS = TimeWindow("nights", ZoneInfo("Europe/Berlin"), start=time(22), end=time(7))
NOON = datetime(2026, 1, 7, 12, tzinfo=UTC)  # a Wednesday, 13:00 in Berlin
MIDNIGHT = datetime(2026, 1, 7, 23, tzinfo=UTC)  # Thursday 00:00 in Berlin


def full(severity: Severity = Severity.WARNING, **fields: object) -> Notification:
    base: dict[str, object] = {"source": "api", "labels": {}, "recipients": (), "mail_from": None}
    return Notification("n1", "n1", NOON, severity, "s", **{**base, **fields})  # type: ignore[arg-type]


def conditions(*texts: str) -> Matcher:
    return Matcher(conditions=tuple(Condition.parse(t) for t in texts))


@pytest.mark.parametrize(
    ("matcher", "notification", "expected"),
    [
        ("team=db", full(labels={"team": "db"}), True),
        ("team=db", full(labels={"team": "dba"}), False),
        ("team=~db|infra", full(labels={"team": "infra"}), True),
        ("team=~db", full(labels={"team": "dba"}), False),  # anchored, as in Alertmanager
        ("team!=db", full(), True),  # a missing label reads as ""
        ("team!~db.*", full(labels={"team": "dba"}), False),
        ("team=", full(), True),
        ("severity!=info", full(Severity.INFO), False),
        ("severity=~critical|high", full(Severity.HIGH), True),
        ("source=alertmanager", full(source="alertmanager"), True),
        ("mail_from=~.*@ci\\.example\\.com", full(mail_from="Build@CI.example.com"), True),
        ("mail_from=build@ci.example.com", full(mail_from="Build@CI.example.com"), True),
        ("recipient=db@example.com", full(recipients=("a@example.com", "DB@example.com")), True),
        ("recipient!=db@example.com", full(recipients=("a@example.com", "db@example.com")), False),
        ("recipient!~.*@example\\.com", full(recipients=("a@other.org",)), True),
        ("label:severity=page", full(Severity.INFO, labels={"severity": "page"}), True),
        ('team="db"', full(labels={"team": "db"}), True),
    ],
)
def test_matchers_follow_alertmanager_semantics(
    matcher: str, notification: Notification, expected: bool
) -> None:
    """Equality, anchored regex and their negations on labels, severity, source, sender, recipients."""
    assert conditions(matcher).matches(notification) is expected


@pytest.mark.parametrize("text", ["team", "=db", "team=~(", "team db"])
def test_malformed_matchers_are_rejected(text: str) -> None:
    """A matcher that does not parse, or an invalid regex, raises ValueError naming it."""
    with pytest.raises(ValueError, match=r"not a matcher|invalid regex"):
        Condition.parse(text)


TREE = (
    Route(
        "db",
        conditions("team=~db|postgres"),
        ("email",),
        ("slack", "sms"),
        routes=(
            Route("db-critical", Matcher(severities=frozenset({Severity.CRITICAL})), ("email",), ("sms",)),
            Route("db-night", conditions("severity=warning"), ("email",), None, active_in=(NIGHTS,)),
        ),
    ),
    Route("audit", conditions("security!="), ("email",), ("slack",), continue_=True),
    Route(
        "loud",
        Matcher(severities=frozenset({Severity.CRITICAL, Severity.HIGH})),
        ("email",),
        ("slack",),
        muted_in=(NIGHTS,),
        mute_exempt=frozenset({Severity.CRITICAL}),
    ),
    Route("rest", Matcher(), ("email",), None),
)


@pytest.mark.parametrize(
    ("notification", "now", "expected"),
    [
        (full(Severity.CRITICAL, labels={"team": "db"}), NOON, ["db-critical"]),
        (full(Severity.WARNING, labels={"team": "db"}), NOON, ["db"]),  # no child: the parent
        (full(Severity.WARNING, labels={"team": "db"}), MIDNIGHT, ["db-night"]),
        (full(Severity.CRITICAL, labels={"team": "web"}), NOON, ["loud"]),
        (full(Severity.HIGH), MIDNIGHT, ["rest"]),  # muted: falls through
        (full(Severity.CRITICAL), MIDNIGHT, ["loud"]),  # critical overrides the mute
        (full(Severity.HIGH, labels={"security": "yes"}), NOON, ["audit", "loud"]),
        (full(Severity.INFO, labels={"security": "yes"}), NOON, ["audit", "rest"]),
        (full(Severity.HIGH), None, ["loud"]),  # no time given: windows do not apply
    ],
)
def test_tree_matches_children_continue_and_windows(
    notification: Notification, now: datetime | None, expected: list[str]
) -> None:
    """Children before their parent, continue falls through, active_in and muted_in follow the clock."""
    assert [r.name for r in matching_routes(notification, TREE, now)] == expected


def test_first_match_decides_the_plan_under_continue() -> None:
    """With continue, the plan is the first matching route's; later matches are only reported."""
    notification = full(Severity.HIGH, labels={"security": "yes"})
    assert plan_for(notification, "outage", TREE, NOON) == Plan("audit", "outage", ("slack",))


@pytest.mark.parametrize(
    ("state", "in_force", "expected"),
    [
        (ProviderState.UNKNOWN, "healthy", Plan("r", "healthy", ("email", "slack"))),
        (ProviderState.UNKNOWN, "outage", Plan("r", "outage", ("email", "slack"))),
        (ProviderState.CREDENTIALS, "healthy", Plan("r", "healthy", ("email",))),  # inherits the mode's
        (ProviderState.OUTAGE, "healthy", Plan("r", "outage", ("sms",))),
        (ProviderState.SUSPECT, "outage", Plan("r", "healthy", ("email",))),
    ],
)
def test_unknown_and_credentials_actions_override_the_mode_in_force(
    state: ProviderState, in_force: Mode, expected: Plan
) -> None:
    """An unknown/credentials action applies in that state; absent, the mode in force's action does."""
    routes = (Route("r", Matcher(), ("email",), ("sms",), unknown=("email", "slack")),)
    assert plan_in_state(full(), state, in_force, routes) == expected
