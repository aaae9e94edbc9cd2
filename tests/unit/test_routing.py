"""Routing decisions: first matching route, per-mode actions, defer."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from daemon.core.model import Mode, Notification, Plan, Severity
from daemon.core.routing import Matcher, NoRouteError, Route, plan_for, plans_for

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
    with pytest.raises(ValueError, match="defers or has steps"):
        Plan("r", "healthy")
