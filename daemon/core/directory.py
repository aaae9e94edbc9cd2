"""The recipient directory: who a notification's email recipients are on the backup channels. Pure.

People have their email addresses and their backup addresses (a Slack user id or an email for
Slack's lookup, a phone number in E.164). Groups have addresses of their own (a team list, an
on-call alias) and are a static list of people or an on-call rotation. Resolving the recipients
of a notification for a channel kind gives the backup targets, the people they belong to, and
what could not be resolved: addresses nobody has (``unknown``) and people without an address of
that kind (``unreachable``). A route's ``fallback`` person or group stands in for unknown ones.

:func:`readdress` is what delivery uses: a channel that sends to the notification's people gets
their targets in place of the email recipients (see docs/directory.md); :class:`Audience` says
where a channel's message went, so the recovery catch-up can tell who received what.
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

    def holders(self, target: str, kind: Kind) -> tuple[str, ...]:
        """The people whose ``kind`` target is ``target`` (case-insensitively: Slack ids, mailboxes)."""
        wanted = target.strip().lower()
        return tuple(p.name for p in self.people.values() if (p.target(kind) or "").lower() == wanted)

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


@dataclass(frozen=True, slots=True)
class Readdressed:
    """A notification's recipients for one channel kind, and what the directory could not place."""

    recipients: tuple[str, ...]
    resolution: Resolution

    @property
    def unresolved(self) -> bool:
        return bool(self.resolution.unknown or self.resolution.unreachable)


def readdress(
    recipients: Sequence[str], kind: Kind, directory: Directory, now: datetime, fallback: str | None = None
) -> Readdressed:
    """The email recipients replaced by their people's ``kind`` targets; anything else kept as given.

    Only addresses with an ``@`` are the directory's business: a phone number or a Slack id in the
    recipients was meant for the channel as it is. Unknown addresses go to ``fallback``; without
    one they stay, so the channel does what it did before a directory existed (Slack looks the
    address up, a backup mailbox receives it, SMS has no use for it) and nothing is silently dropped.
    """
    emails = [r for r in recipients if "@" in r]
    found = resolve(emails, kind, directory, now, fallback)
    kept = [r for r in recipients if "@" not in r or (fallback is None and r in found.unknown)]
    return Readdressed(tuple(dict.fromkeys([*found.targets, *kept])), found)


@dataclass(frozen=True, slots=True)
class Audience:
    """How one backup channel addresses people.

    ``to_people``: the channel sends to the notification's people (Slack ``dm_recipients``, an SMS
    channel or a backup email channel without fixed destinations), so its recipients are
    readdressed. ``fixed``: what it always sends to (Slack ``targets``) or by default (SMS
    ``recipients``, email ``to``).
    """

    kind: Kind
    to_people: bool
    fixed: tuple[str, ...] = ()

    def destinations(self, recipients: Sequence[str]) -> tuple[str, ...]:
        """Where the channel sends a message with ``recipients``, by the channel's own rules.

        Mirrors the adapters (``channels/slack.py``, ``sms.py``, ``email.py``): Slack posts to its
        targets plus, with ``dm_recipients``, the recipients; SMS sends to the recipients that are
        phone numbers, else its own; email to the recipients, else its own.
        """
        if self.kind == "slack":
            return tuple(dict.fromkeys([*self.fixed, *(recipients if self.to_people else ())]))
        given = [r for r in recipients if r.startswith("+")] if self.kind == "sms" else list(recipients)
        return tuple(given) or self.fixed
