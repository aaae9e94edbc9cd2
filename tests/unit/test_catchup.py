"""The recovery catch-up's pure part, and the renderer handing channels the people's targets."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from daemon.core.catchup import (
    Outage,
    Received,
    Sent,
    catch_up_email,
    catch_up_key,
    last_outage,
    outage_start,
    received_by,
    withdrawn,
)
from daemon.core.directory import Audience, Directory, Person
from daemon.core.health import Transition
from daemon.core.model import Delivery, DeliveryState, Notification, ProviderState, Severity
from daemon.core.routing import Matcher, Route
from daemon.rendering import People, Renderer, Unresolved
from daemon.store.values import AttemptView, Claimed

T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)
H, S, OUT, R, F, U = (
    ProviderState.HEALTHY,
    ProviderState.SUSPECT,
    ProviderState.OUTAGE,
    ProviderState.RECOVERING,
    ProviderState.FLAPPING,
    ProviderState.UNKNOWN,
)
DIRECTORY = Directory(
    people={
        "alice": Person("alice", ("alice@example.com",), "U1", "+4915110000001"),
        "carol": Person(
            "carol", ("carol@example.com",), None, "+4915110000003", None, ZoneInfo("Europe/Berlin")
        ),
    }
)


def _steps(*states: ProviderState) -> list[Transition]:
    return [
        Transition(T0 + timedelta(minutes=i), a, b, "") for i, (a, b) in enumerate(itertools.pairwise(states))
    ]


@pytest.mark.parametrize(
    ("transitions", "expected"),
    [
        (_steps(H, S, OUT, R, H), Outage(T0 + timedelta(minutes=1), T0 + timedelta(minutes=3))),
        (_steps(H, S, OUT, R, F, R, H), Outage(T0 + timedelta(minutes=1), T0 + timedelta(minutes=5))),
        (_steps(H, S, OUT, U, OUT, R, H), Outage(T0 + timedelta(minutes=1), T0 + timedelta(minutes=5))),
        (_steps(H, S, OUT, R), None),  # not over yet
        (_steps(OUT, R, H), None),  # its start is older than what was read
        (_steps(H, U, H), None),  # our own network, never an outage
        ([], None),
    ],
)
def test_last_outage_spans_the_outage_mode(transitions: list[Transition], expected: Outage | None) -> None:
    """The episode runs from leaving the healthy mode to returning to it, overlays and flapping included."""
    assert last_outage(transitions) == expected


@pytest.mark.parametrize(
    ("transitions", "expected"),
    [
        (_steps(H, S, OUT, R, F, U), T0 + timedelta(minutes=1)),
        (_steps(H, S, OUT, R, H, S, OUT), T0 + timedelta(minutes=5)),  # the second episode
        (_steps(H, S, OUT, R, H), None),  # over
        (_steps(OUT, R), None),  # its start is older than what was read
        ([], None),
    ],
)
def test_outage_start_names_the_episode_going_on(transitions: list[Transition], expected: object) -> None:
    """The start of the outage mode in force after the transitions, overlays and flapping included."""
    assert outage_start(transitions) == expected


def test_withdrawn_names_sends_a_callback_reported_undelivered() -> None:
    """A delivered send a later callback reports failed is undone; a good callback undoes nothing."""
    trail = [
        (1, "callback:failed"),  # about nothing delivered (yet): ignored
        (1, "retry"),
        (1, "delivered"),
        (1, "callback:failed"),
        (1, "callback:failed"),  # a second part of the same message
        (2, "delivered"),
        (3, "delivered"),
        (3, "callback:delivered"),
    ]
    assert withdrawn(trail) == {1}


def test_withdrawn_tells_apart_two_deliveries_on_one_channel() -> None:
    """Two sends on one channel with the same attempt number: only the one reported undelivered is undone."""
    attempts = [
        AttemptView(7, "sms", 1, T0, T0, "delivered", None),  # the escalation's first text
        AttemptView(9, "sms", 1, T0, T0, "delivered", None),  # a later step texting again
        AttemptView(9, "sms", 1, T0, T0, "callback:failed", "30003 unreachable"),
    ]
    assert withdrawn((a.delivery_id, a.outcome) for a in attempts) == {9}


def test_received_by_maps_destinations_back_to_people() -> None:
    """One line per notification and channel; failed and impersonal destinations count for nobody."""
    sends = [
        Sent("n1", "disk", "critical", "slack", "slack", T0, ("#ops", "U1")),
        Sent("n1", "disk", "critical", "slack", "slack", T0 + timedelta(seconds=5), ("U1",)),  # a re-send
        Sent(
            "n2",
            "db",
            "high",
            "sms",
            "sms",
            T0,
            ("+4915110000001", "+4915110000003"),
            "sent to 1 of 2; failed +4915110000003: Twilio HTTP 400",
        ),
    ]
    assert received_by(sends, DIRECTORY) == {
        "alice": [
            _line("n1", "disk", "critical", "slack", T0),
            _line("n2", "db", "high", "sms", T0),
        ]
    }


def test_received_by_lists_one_digest_oldest_notification_first() -> None:
    """A digest's notifications share its attempt's start: they are listed oldest first all the
    same, not in the newest-first order the store is read in (found by an outage-day review)."""
    sends = [Sent(f"n{i}", f"burst {i}", "high", "slack", "slack", T0, ("U1",)) for i in (3, 2, 1)]
    lines = received_by(sends, DIRECTORY)["alice"]
    assert [line.notification_id for line in lines] == ["n1", "n2", "n3"]


def test_catch_up_email_lists_lines_in_the_person_time_zone() -> None:
    """Subject counts the lines; each line has the local time, channel, severity, subject and id."""
    outage = Outage(T0, T0 + timedelta(hours=1))
    subject, body = catch_up_email(
        DIRECTORY.people["carol"], [_line("n2", "db", "high", "sms", T0)], outage, "Exchange"
    )
    assert subject == "While Exchange was down, 1 notification reached you through backup channels"
    assert "2024-03-01 13:00:00 CET  via sms: [HIGH] db (n2)" in body
    assert catch_up_key(outage, "carol") == "catchup:2024-03-01T12:00:00+00:00:carol"


def test_catch_up_subject_counts_notifications_not_lines() -> None:
    """One notification by Slack and SMS is two lines and one notification."""
    outage = Outage(T0, T0 + timedelta(hours=1))
    lines = [_line("n1", "db", "critical", "slack", T0), _line("n1", "db", "critical", "sms", T0)]
    subject, body = catch_up_email(DIRECTORY.people["alice"], lines, outage, "Exchange")
    assert subject == "While Exchange was down, 1 notification reached you through backup channels"
    assert "via slack" in body and "via sms" in body


def _line(nid: str, subject: str, severity: str, channel: str, at: datetime) -> Received:
    return Received(nid, subject, severity, channel, at)


ROUTES = (
    Route("db", Matcher(), ("email",), ("sms",), fallback="carol"),
    Route("rest", Matcher(), ("email",), ("slack",)),
)
AUDIENCES = {"sms": Audience("sms", True), "slack": Audience("slack", False, ("#ops",))}


class _Clock:
    def now(self) -> datetime:
        return T0

    def monotonic(self) -> float:
        return 0.0


def _claimed(channel: str, route: str, attempts: int = 1) -> Claimed:
    n = Notification(
        "n1", "n1", T0, Severity.CRITICAL, "db down", recipients=("alice@example.com", "x@else.org")
    )
    delivery = Delivery(1, "n1", "outage", route, 0, channel, DeliveryState.IN_FLIGHT, attempts, None)
    return Claimed(delivery, n)


def _renderer(reports: list[Unresolved]) -> Renderer:
    people = People(lambda: AUDIENCES, lambda: DIRECTORY, lambda: ROUTES)
    return Renderer(lambda: ProviderState.OUTAGE, people=people, clock=_Clock(), on_unresolved=reports.append)


def test_renderer_hands_sms_the_people_phones_and_reports_the_unknown() -> None:
    """An SMS channel that sends to people gets phones; the unknown address goes to the route's fallback."""
    reports: list[Unresolved] = []
    message = _renderer(reports).render("sms", _claimed("sms", "db"))
    assert message.recipients == ("+4915110000001", "+4915110000003")
    assert reports == [Unresolved("n1", "sms", "db", ("x@else.org",), (), "carol")]


def test_renderer_reports_once_per_delivery() -> None:
    """A retry does not report the same unresolved recipients again."""
    reports: list[Unresolved] = []
    _renderer(reports).render("sms", _claimed("sms", "db", attempts=2))
    assert reports == []


def test_renderer_leaves_channels_with_fixed_targets_alone() -> None:
    """A channel that does not send to people gets the recipients as they were."""
    reports: list[Unresolved] = []
    message = _renderer(reports).render("slack", _claimed("slack", "rest"))
    assert message.recipients == ("alice@example.com", "x@else.org")
    assert reports == []
