"""The recipient directory: recipients to backup targets, rotations, unknown recipients, fallback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from daemon.core.directory import Directory, Group, Kind, Person, Resolution, Rotation, resolve

BERLIN = ZoneInfo("Europe/Berlin")
DIRECTORY = Directory(
    people={
        "alice": Person("alice", ("alice@example.com",), "U1", "+4915110000001"),
        "bob": Person("bob", ("Bob@Example.com",), "bob@example.com", None, "bob@backup.example.org"),
    },
    groups={
        "oncall": Group(
            "oncall",
            ("oncall@example.com",),
            rotation=Rotation(("alice", "bob"), BERLIN, datetime(2024, 1, 1, 9), timedelta(days=7)),
        ),
        "team": Group("team", ("team@example.com",), members=("alice", "bob")),
    },
)
WEEK1 = datetime(2024, 1, 3, 12, tzinfo=UTC)  # alice's first week


@pytest.mark.parametrize(
    ("recipients", "kind", "fallback", "expected"),
    [
        (["alice@example.com"], "slack", None, Resolution(("U1",), ("alice",))),
        (["bob@example.com"], "sms", None, Resolution((), ("bob",), unreachable=("bob",))),
        (["bob@EXAMPLE.com"], "email", None, Resolution(("bob@backup.example.org",), ("bob",))),
        (
            ["team@example.com", "alice@example.com"],
            "slack",
            None,
            Resolution(("U1", "bob@example.com"), ("alice", "bob")),
        ),
        (["oncall@example.com"], "sms", None, Resolution(("+4915110000001",), ("alice",))),
        (["who@else.org"], "slack", None, Resolution(unknown=("who@else.org",))),
        (["who@else.org"], "slack", "oncall", Resolution(("U1",), ("alice",), ("who@else.org",))),
        (
            ["bob@example.com", "who@else.org"],
            "slack",
            "team",
            Resolution(("bob@example.com", "U1"), ("bob", "alice"), ("who@else.org",)),
        ),
    ],
)
def test_recipients_resolve_to_backup_targets(
    recipients: list[str], kind: Kind, fallback: str | None, expected: Resolution
) -> None:
    """People and groups map to their targets of the kind; unknown ones are reported or go to the fallback."""
    assert resolve(recipients, kind, DIRECTORY, WEEK1, fallback) == expected


@pytest.mark.parametrize(
    ("at", "on_call"),
    [
        (datetime(2024, 1, 8, 7, 59, tzinfo=UTC), "alice"),  # Monday 08:59 CET, before the handoff
        (datetime(2024, 1, 8, 8, 0, tzinfo=UTC), "bob"),  # Monday 09:00 CET
        (datetime(2024, 4, 1, 6, 59, tzinfo=UTC), "alice"),  # Monday 08:59 CEST, end of shift 12
        (datetime(2024, 4, 1, 7, 0, tzinfo=UTC), "bob"),  # 09:00 CEST: handoff stays at 09:00 local
    ],
)
def test_rotation_hands_off_at_local_wall_time_across_dst(at: datetime, on_call: str) -> None:
    """A weekly Monday 09:00 Berlin handoff stays at 09:00 local on both sides of the DST change."""
    assert DIRECTORY.members("oncall", at) == (on_call,)


def test_unknown_fallback_name_raises() -> None:
    """A fallback that names no person or group is a KeyError, caught at config load."""
    with pytest.raises(KeyError, match="nobody"):
        resolve(["x@y.org"], "slack", DIRECTORY, WEEK1, "nobody")
