"""The recovery catch-up, pure: which outage just ended, and who received what meanwhile.

An outage, here, is an episode of the ``outage`` routing mode: from the transition that left the
``healthy`` mode to the one that returned to it (``recovering``, ``flapping`` and overlays in
between belong to the episode). What reached a person is every backup send of the episode whose
destinations include one of that person's targets, minus destinations the channel's receipt
names as failed and sends a vendor's status callback later reported undelivered. One catch-up
email per person and episode, keyed so that restarts and several nodes queue it once:
``catchup:<episode start>:<person>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from daemon.core.directory import Directory, Kind, Person
from daemon.core.health import Transition
from daemon.core.model import Mode, mode_for

#: how each channel's receipt detail introduces the destinations it could not reach (channels/sms.py
#: "; failed ", channels/slack.py "; not posted: ", channels/email_replies.py "; refused: ")
_FAILED_MARKERS = ("; failed ", "; not posted: ", "; refused: ")
#: the outcome the store records when a status callback reports a delivered message undelivered
#: (daemon/store/sqlite_callbacks.py): that delivery's final state is failed, it reached nobody
UNDELIVERED = "callback:failed"


@dataclass(frozen=True, slots=True)
class Outage:
    started_at: datetime
    ended_at: datetime


@dataclass(frozen=True, slots=True)
class Sent:
    """One delivered send on a backup channel: what, where to, when, and the channel's receipt."""

    notification_id: str
    subject: str
    severity: str
    channel: str
    kind: Kind
    at: datetime
    destinations: tuple[str, ...]
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Received:
    """A line of a catch-up email: one notification that reached the person on one channel."""

    notification_id: str
    subject: str
    severity: str
    channel: str
    at: datetime


def last_outage(transitions: Sequence[Transition]) -> Outage | None:
    """The latest outage episode that has ended, from ``transitions`` oldest first.

    An episode whose start lies before the first transition given cannot be named, so it is None.
    """
    if not transitions:
        return None
    # unknown/credentials overlay a mode the first transition does not show: assume healthy
    mode: Mode = mode_for(transitions[0].from_state, "healthy")
    started_at: datetime | None = None
    found: Outage | None = None
    for transition in transitions:
        new = mode_for(transition.to_state, mode)
        if mode == "healthy" and new == "outage":
            started_at = transition.at
        elif mode == "outage" and new == "healthy" and started_at is not None:
            found = Outage(started_at, transition.at)
        mode = new
    return found


def outage_start(transitions: Sequence[Transition]) -> datetime | None:
    """When the outage episode still going on after ``transitions`` (oldest first) began; None
    when the mode is healthy after them, or the episode began before the first of them."""
    if not transitions:
        return None
    mode: Mode = mode_for(transitions[0].from_state, "healthy")
    started_at: datetime | None = None
    for transition in transitions:
        new = mode_for(transition.to_state, mode)
        if mode != new:
            started_at = transition.at if new == "outage" else None
        mode = new
    return started_at if mode == "outage" else None


def withdrawn(trail: Iterable[tuple[int, str]]) -> frozenset[int]:
    """The deliveries in ``trail`` whose delivered send a later callback undid.

    ``trail`` is a notification's attempts in order, as (delivery id, outcome); the store records
    a callback on the delivery it concerns, so two deliveries on one channel never mix.
    """
    delivered: set[int] = set()
    undone: set[int] = set()
    for delivery_id, outcome in trail:
        if outcome == "delivered":
            delivered.add(delivery_id)
        elif outcome == UNDELIVERED and delivery_id in delivered:
            undone.add(delivery_id)
    return frozenset(undone)


def received_by(sends: Iterable[Sent], directory: Directory) -> dict[str, list[Received]]:
    """Per person, what reached them: one line per notification and channel, oldest first."""
    found: dict[str, dict[tuple[str, str], Received]] = {}
    for sent in sends:
        failed = _failed_part(sent.detail)
        line = Received(sent.notification_id, sent.subject, sent.severity, sent.channel, sent.at)
        for destination in sent.destinations:
            if _named(destination, failed):
                continue
            for person in directory.holders(destination, sent.kind):
                lines = found.setdefault(person, {})
                key = (sent.notification_id, sent.channel)
                if key not in lines or line.at < lines[key].at:
                    lines[key] = line
    # ties (the notifications of one digest share its attempt's start): ids are ULIDs, in creation order
    return {
        person: sorted(lines.values(), key=lambda r: (r.at, r.notification_id, r.channel))
        for person, lines in found.items()
    }


def _failed_part(detail: str) -> str:
    text = detail.lower()
    return " ".join(text.partition(marker)[2] for marker in _FAILED_MARKERS)


def _named(destination: str, failed: str) -> bool:
    """Whether ``failed`` names ``destination`` whole: ``devops@x`` refused is not ``ops@x``,
    ``+4930123456`` is not ``+493012345``."""
    edge = r"[\w.+@-]"
    return re.search(rf"(?<!{edge}){re.escape(destination.lower())}(?!{edge})", failed) is not None


def catch_up_key(outage: Outage, person: str) -> str:
    return f"catchup:{outage.started_at.isoformat()}:{person}"


def catch_up_email(
    person: Person, lines: Sequence[Received], outage: Outage, provider: str
) -> tuple[str, str]:
    """The subject and body of ``person``'s catch-up, times in their time zone (else UTC)."""
    zone: tzinfo = person.timezone or UTC
    # a line per notification and channel: one that reached them twice (Slack and SMS) is one
    reached = len({r.notification_id for r in lines})
    count = f"{reached} notification{'s' if reached != 1 else ''}"
    subject = f"While {provider} was down, {count} reached you through backup channels"
    body = [
        f"{provider} was down from {_local(outage.started_at, zone)} to {_local(outage.ended_at, zone)}.",
        "These notifications reached you elsewhere meanwhile:",
        "",
        *(
            f"{_local(r.at, zone)}  via {r.channel}: [{r.severity.upper()}] {r.subject} ({r.notification_id})"
            for r in lines
        ),
    ]
    return subject, "\n".join(body) + "\n"


def _local(at: datetime, zone: tzinfo) -> str:
    return at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")
