"""Time windows: weekdays and local wall-clock spans in IANA zones, past midnight and across DST."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from daemon.core.timewindows import TimeWindow, parse_clock, parse_days

BERLIN = TimeWindow("business", ZoneInfo("Europe/Berlin"), parse_days(["mon-fri"]), time(8), time(18))
NEW_YORK = TimeWindow("business", ZoneInfo("America/New_York"), parse_days(["mon-fri"]), time(8), time(18))
NIGHTS = TimeWindow("nights", ZoneInfo("Australia/Sydney"), parse_days(["fri"]), time(22), time(6))


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("window", "at", "inside"),
    [
        (BERLIN, utc(2024, 3, 29, 7, 0), True),  # Friday 08:00 CET (UTC+1)
        (BERLIN, utc(2024, 3, 29, 6, 59), False),
        (BERLIN, utc(2024, 4, 1, 6, 0), True),  # Monday 08:00 CEST (UTC+2), after the DST change
        (BERLIN, utc(2024, 4, 1, 5, 59), False),
        (BERLIN, utc(2024, 4, 1, 16, 0), False),  # 18:00 CEST: the end is exclusive
        (BERLIN, utc(2024, 3, 30, 12, 0), False),  # Saturday
        (NEW_YORK, utc(2024, 3, 11, 12, 0), True),  # Monday 08:00 EDT, the day after the US change
        (NEW_YORK, utc(2024, 3, 8, 12, 0), False),  # Friday 07:00 EST
        (NEW_YORK, utc(2024, 3, 8, 22, 59), True),  # Friday 17:59 EST
        (NIGHTS, utc(2024, 3, 1, 12, 0), True),  # Friday 23:00 AEDT (UTC+11)
        (NIGHTS, utc(2024, 3, 1, 17, 0), True),  # Saturday 04:00: the span Friday started
        (NIGHTS, utc(2024, 3, 1, 20, 0), False),  # Saturday 07:00
        (NIGHTS, utc(2024, 3, 2, 12, 0), False),  # Saturday 23:00: Saturday is not a day of it
    ],
)
def test_windows_follow_local_wall_time(window: TimeWindow, at: datetime, inside: bool) -> None:
    """Inside or outside, in the window's own zone, on both sides of DST changes and midnight."""
    assert window.contains(at) is inside


def test_whole_day_window() -> None:
    """00:00-00:00 covers the whole of each listed day."""
    weekend = TimeWindow("weekend", ZoneInfo("UTC"), parse_days(["sat-sun"]))
    assert weekend.contains(utc(2024, 3, 30, 0, 0)) and weekend.contains(utc(2024, 3, 31, 23, 59))
    assert not weekend.contains(utc(2024, 4, 1, 0, 0))


def test_naive_times_are_refused() -> None:
    """A naive datetime has no instant: the window refuses to guess."""
    with pytest.raises(ValueError, match="aware"):
        BERLIN.contains(datetime(2024, 3, 29, 9))


@pytest.mark.parametrize(
    ("specs", "days"), [(["mon-fri"], {0, 1, 2, 3, 4}), (["fri-mon"], {4, 5, 6, 0}), (["sun", "Wed"], {6, 2})]
)
def test_day_specs_parse_with_ranges(specs: list[str], days: set[int]) -> None:
    """Day names and ranges, wrapping over the week's end."""
    assert parse_days(specs) == frozenset(days)


@pytest.mark.parametrize("spec", ["mon_fri", "mon\u2013fri", "mon,tue", "month", "sunflower", "mo"])
def test_day_specs_that_are_no_day_are_rejected(spec: str) -> None:
    """A spec that is no day (a range joined by _ or an en dash) is refused, not read as its first day."""
    with pytest.raises(ValueError, match="unknown day"):
        parse_days([spec])


@pytest.mark.parametrize(
    ("spec", "days"),
    [("Monday-Friday", {0, 1, 2, 3, 4}), ("mon - wed", {0, 1, 2}), ("tues", {1}), ("thurs", {3})],
)
def test_full_and_abbreviated_day_names_parse(spec: str, days: set[int]) -> None:
    """Full day names and abbreviations of at least three letters are days."""
    assert parse_days([spec]) == frozenset(days)


@pytest.mark.parametrize("text", ["8", "25:00", "08:60", "8h"])
def test_bad_clock_times_are_rejected(text: str) -> None:
    """Only HH:MM times of day (and 24:00) are accepted."""
    with pytest.raises(ValueError, match=r"HH:MM|no such time"):
        parse_clock(text)
