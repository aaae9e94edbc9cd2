"""Configuration of the recipient directory: people, and groups of them (members or a rotation).

Field reference: ``docs/policies.md`` (the directory) and ``docs/directory.md`` (its use in
delivery). :func:`build_directory` turns the validated models into the pure core's
:class:`~daemon.core.directory.Directory`; the routes that name its people and groups (a route's
``fallback``) are :mod:`daemon.config_routes`'.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, Field, model_validator

from daemon.configbase import Duration, EmailAddress, Model, TimeZoneName
from daemon.core.directory import Directory, Group, Person, Rotation


def _e164(value: str) -> str:
    if not (value.startswith("+") and value[1:].isdigit() and 8 <= len(value) <= 16):
        raise ValueError(f"expected a phone number in E.164 form such as +4915112345678, got {value!r}")
    return value


Phone = Annotated[str, AfterValidator(_e164)]


class PersonConfig(Model):
    email: list[EmailAddress] = Field(default_factory=list)
    #: Slack user id (U...) or an email address Slack can look the user up by
    slack: str | None = Field(None, min_length=1)
    phone: Phone | None = None
    #: a mailbox at another provider, for backup ``email`` channels
    backup_email: EmailAddress | None = None
    timezone: TimeZoneName | None = None


class RotationConfig(Model):
    """On-call in turn: ``members[0]`` from ``start`` (local wall time), the next after ``every``."""

    members: list[str] = Field(min_length=1)
    #: wall time in ``timezone``; one written with an offset (``Z``, ``+01:00``) is that instant
    start: datetime
    every: Duration
    timezone: TimeZoneName = "UTC"


class GroupConfig(Model):
    email: list[EmailAddress] = Field(default_factory=list)
    members: list[str] | None = Field(None, min_length=1)
    rotation: RotationConfig | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> GroupConfig:
        if (self.members is None) == (self.rotation is None):
            raise ValueError("a group has either members or a rotation")
        return self


class DirectoryConfig(Model):
    people: dict[str, PersonConfig] = Field(default_factory=dict)
    groups: dict[str, GroupConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> DirectoryConfig:
        clash = sorted(set(self.people) & set(self.groups))
        if clash:
            raise ValueError(f"names used for both a person and a group: {', '.join(clash)}")
        for name, group in self.groups.items():
            members = group.members or (group.rotation.members if group.rotation else [])
            unknown = [m for m in members if m not in self.people]
            if unknown:
                raise ValueError(f"group {name}: unknown people {', '.join(unknown)}")
        return self


def build_directory(config: DirectoryConfig) -> Directory:
    people = {n: _person(n, p) for n, p in config.people.items()}
    return Directory(people, {n: _group(n, g) for n, g in config.groups.items()})


def _person(name: str, p: PersonConfig) -> Person:
    zone = ZoneInfo(p.timezone) if p.timezone else None
    return Person(name, tuple(p.email), p.slack, p.phone, p.backup_email, zone)


def _group(name: str, g: GroupConfig) -> Group:
    r = g.rotation
    if r is None:
        return Group(name, tuple(g.email), tuple(g.members or ()))
    zone = ZoneInfo(r.timezone)
    # an offset names an instant: its wall time in the rotation's zone, not the digits as written
    start = r.start.astimezone(zone) if r.start.tzinfo is not None else r.start
    rotation = Rotation(tuple(r.members), zone, start.replace(tzinfo=None), r.every)
    return Group(name, tuple(g.email), tuple(g.members or ()), rotation)
