"""The recipient directory: recipients to backup targets, rotations, unknown recipients, fallback."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from daemon.config import parse_config
from daemon.config_directory import build_directory
from daemon.core.directory import (
    Audience,
    Directory,
    Group,
    Kind,
    Person,
    Resolution,
    Rotation,
    readdress,
    resolve,
)

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


@pytest.mark.parametrize(
    "start", ["2024-01-01T09:00:00", "2024-01-01T08:00:00Z", "2024-01-01T03:00:00-05:00"]
)
def test_rotation_start_with_an_offset_is_that_instant(start: str) -> None:
    """A rotation's start with an offset hands off at that instant, not at its digits read as Berlin time."""
    rotation = {"members": ["alice", "bob"], "start": start, "every": "7d", "timezone": "Europe/Berlin"}
    people = {"alice": {"email": ["alice@example.com"]}, "bob": {"email": ["bob@example.com"]}}
    groups = {"oncall": {"email": ["oncall@example.com"], "rotation": rotation}}
    routes = [{"match": {}, "healthy": ["email"], "outage": "defer"}]
    directory_config = {"people": people, "groups": groups}
    config = parse_config(yaml.safe_dump({**DOC_BASE, "routes": routes, "directory": directory_config}))
    directory = build_directory(config.directory)
    assert directory.members("oncall", datetime(2024, 1, 8, 7, 59, tzinfo=UTC)) == ("alice",)  # 08:59 CET
    assert directory.members("oncall", datetime(2024, 1, 8, 8, 0, tzinfo=UTC)) == ("bob",)  # 09:00 CET


def test_unknown_fallback_name_raises() -> None:
    """A fallback that names no person or group is a KeyError, caught at config load."""
    with pytest.raises(KeyError, match="nobody"):
        resolve(["x@y.org"], "slack", DIRECTORY, WEEK1, "nobody")


@pytest.mark.parametrize(
    ("recipients", "kind", "fallback", "expected"),
    [
        (["alice@example.com", "+4915199999999"], "sms", None, ("+4915110000001", "+4915199999999")),
        (["oncall@example.com", "C0OPS"], "slack", None, ("U1", "C0OPS")),
        (["who@else.org"], "slack", None, ("who@else.org",)),
        (["who@else.org", "bob@example.com"], "email", "alice", ("bob@backup.example.org",)),
        (["bob@example.com"], "sms", None, ()),
    ],
)
def test_readdress_replaces_email_recipients_with_targets(
    recipients: list[str], kind: Kind, fallback: str | None, expected: tuple[str, ...]
) -> None:
    """Email recipients become targets; other recipients, and unknown ones without a fallback, stay."""
    assert readdress(recipients, kind, DIRECTORY, WEEK1, fallback).recipients == expected


def test_readdress_reports_unknown_and_unreachable() -> None:
    """What the directory could not place is in the resolution, even when a fallback stood in."""
    found = readdress(["who@else.org", "bob@example.com"], "sms", DIRECTORY, WEEK1, "oncall")
    assert found.unresolved
    assert found.resolution.unknown == ("who@else.org",)
    assert found.resolution.unreachable == ("bob",)
    assert found.recipients == ("+4915110000001",)


def test_holders_find_people_by_target() -> None:
    """A Slack id, phone or backup mailbox leads back to its person, case-insensitively."""
    assert DIRECTORY.holders("u1", "slack") == ("alice",)
    assert DIRECTORY.holders("+4915110000001", "sms") == ("alice",)
    assert DIRECTORY.holders("BOB@backup.example.org", "email") == ("bob",)
    assert DIRECTORY.holders("C0OPS", "slack") == ()


@pytest.mark.parametrize(
    ("audience", "recipients", "expected"),
    [
        (Audience("slack", True, ("#ops",)), ("U1",), ("#ops", "U1")),
        (Audience("slack", False, ("#ops",)), ("U1",), ("#ops",)),
        (Audience("sms", False, ("+4915100000000",)), ("a@b.org",), ("+4915100000000",)),
        (Audience("sms", False, ("+4915100000000",)), ("+4915110000001",), ("+4915110000001",)),
        (Audience("email", True), ("x@backup.org",), ("x@backup.org",)),
        (Audience("email", False, ("ops@x.org",)), (), ("ops@x.org",)),
    ],
)
def test_audience_destinations_follow_the_channel_rules(
    audience: Audience, recipients: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    """Where a channel sends, as its adapter decides: fixed targets, recipients, or its defaults."""
    assert audience.destinations(recipients) == expected


DOC_BASE: dict[str, Any] = {
    "store": {"path": "/tmp/x.db"},
    "api": {"tokens": [{"name": "t", "token": "t0123456789"}]},
    "provider": {
        "name": "p",
        "smtp": {"host": "smtp.example.com", "username": "o@example.com", "password": "pw"},
    },
    "channels": {
        "email": {"type": "email"},
        "slack": {"type": "slack", "token": "xoxb-1", "targets": ["#ops"]},
        "slack-dm": {"type": "slack", "token": "xoxb-2", "dm_recipients": True},
        "sms": {
            "type": "sms",
            "account_sid": "AC" + "0" * 32,
            "auth_token": "x",
            "from_number": "+14155550100",
        },
    },
}


@pytest.mark.parametrize("page", ["directory.md", "recovery.md"])
def test_doc_policy_snippets_load(page: str) -> None:
    """Every YAML snippet with routes on the page is valid configuration (with stand-in channels)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / page).read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]
    snippets = [b for b in blocks if isinstance(b, dict) and "routes" in b]
    assert snippets, f"no policy snippet in {page}"
    for snippet in snippets:
        merged = {**DOC_BASE, **snippet, "provider": {**DOC_BASE["provider"], **snippet.get("provider", {})}}
        env = dict.fromkeys(re.findall(r"\$\{(\w+)\}", yaml.safe_dump(merged)), "secret-value-0123")
        parse_config(yaml.safe_dump(merged), filename=page, env=env)
