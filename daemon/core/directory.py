"""The recipient directory: who a notification's email recipients are on the backup channels. Pure.

People have their email addresses and their backup addresses (a Slack user id or an email for
Slack's lookup, a phone number in E.164). Groups have addresses of their own (a team list, an
on-call alias) and are a static list of people or an on-call rotation. Resolving the recipients
of a notification for a channel kind gives the backup targets, the people they belong to, and
what could not be resolved: addresses nobody has (``unknown``) and people without an address of
that kind (``unreachable``). A route's ``fallback`` person or group stands in for unknown ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

#: channel kinds whose targets the directory knows
Kind = Literal["slack", "sms", "email"]


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    emails: tuple[str, ...] = ()
    #: Slack user id (U...) or an email address to look the user up by
    slack: str | None = None
    #: E.164, e.g. +4915112345678
    phone: str | None = None
    #: a backup mailbox at another provider, for ``email`` channels
    backup_email: str | None = None
    timezone: ZoneInfo | None = None

    def target(self, kind: Kind) -> str | None:
        return {"slack": self.slack, "sms": self.phone, "email": self.backup_email}[kind]


@dataclass(frozen=True, slots=True)
class Rotation:
    """An ordered list of people handing over every ``every`` from ``start``, in local wall time.

    Wall time, so a weekly handoff at Monday 09:00 Europe/Berlin stays at 09:00 across DST.
    """

    members: tuple[str, ...]
    timezone: ZoneInfo
    start: datetime  # naive local wall time
    every: timedelta

    def on_call(self, now: datetime) -> str:
        local = now.astimezone(self.timezone).replace(tzinfo=None)
        shifts = (local - self.start) // self.every
        return self.members[shifts % len(self.members)]


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    emails: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    rotation: Rotation | None = None

    def people(self, now: datetime) -> tuple[str, ...]:
        return (self.rotation.on_call(now),) if self.rotation else self.members


@dataclass(frozen=True, slots=True)
class Resolution:
    targets: tuple[str, ...] = ()
    people: tuple[str, ...] = ()
    #: recipient addresses the directory does not know
    unknown: tuple[str, ...] = ()
    #: people who have no address for this channel kind
    unreachable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Directory:
    people: Mapping[str, Person] = field(default_factory=dict)
    groups: Mapping[str, Group] = field(default_factory=dict)

    def members(self, name: str, now: datetime) -> tuple[str, ...]:
        """The people a person or group name stands for at ``now``."""
        if name in self.people:
            return (name,)
        if name in self.groups:
            return self.groups[name].people(now)
        raise KeyError(f"no person or group named {name!r}")

    def owners(self, address: str, now: datetime) -> tuple[str, ...] | None:
        """The people an email address reaches, or None when nobody has it."""
        wanted = address.strip().lower()
        for person in self.people.values():
            if wanted in (e.lower() for e in person.emails):
                return (person.name,)
        for group in self.groups.values():
            if wanted in (e.lower() for e in group.emails):
                return group.people(now)
        return None


def resolve(
    recipients: Sequence[str], kind: Kind, directory: Directory, now: datetime, fallback: str | None = None
) -> Resolution:
    """The ``kind`` targets of the people behind ``recipients``; ``fallback`` covers unknown ones."""
    people: dict[str, None] = {}
    unknown = [r for r in recipients if not _add(people, directory.owners(r, now))]
    if unknown and fallback is not None:
        _add(people, directory.members(fallback, now))
    targets: dict[str, None] = {}
    unreachable = []
    for name in people:
        target = directory.people[name].target(kind)
        if target is None:
            unreachable.append(name)
        else:
            targets[target] = None
    return Resolution(tuple(targets), tuple(people), tuple(unknown), tuple(unreachable))


def _add(people: dict[str, None], names: tuple[str, ...] | None) -> bool:
    people.update(dict.fromkeys(names or ()))
    return names is not None
