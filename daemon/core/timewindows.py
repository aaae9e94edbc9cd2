"""Time windows: recurring weekly spans of local time in an IANA time zone. Pure.

A window is a set of weekdays and a ``start``-``end`` span of wall-clock time in its zone, so
"08:00-18:00 Europe/Berlin" stays 08:00-18:00 on both sides of a DST change. A span whose end is
not after its start runs past midnight: the part after midnight belongs to the day it started on
(``fri 22:00-06:00`` covers Saturday 03:00). ``start == end`` is 24 hours from ``start``
(00:00-00:00: the whole day).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ALL_DAYS = frozenset(range(7))


@dataclass(frozen=True, slots=True)
class TimeWindow:
    name: str
    timezone: ZoneInfo
    days: frozenset[int] = ALL_DAYS  # 0 is Monday, as datetime.weekday()
    start: time = time(0)
    end: time = time(0)

    def contains(self, at: datetime) -> bool:
        """Whether the aware instant ``at`` falls inside the window."""
        if at.tzinfo is None:
            raise ValueError("a window needs an aware datetime")
        local = at.astimezone(self.timezone)
        day, clock = local.weekday(), local.time().replace(tzinfo=None)
        if self.start < self.end:
            return day in self.days and self.start <= clock < self.end
        if clock >= self.start:
            return day in self.days
        # past midnight: the span that started yesterday, if yesterday is one of the days
        return clock < self.end and (day - 1) % 7 in self.days

    def describe(self) -> str:
        days = ",".join(DAY_NAMES[d] for d in sorted(self.days))
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M} {self.timezone.key}"


def parse_days(specs: Iterable[str]) -> frozenset[int]:
    """``["mon-fri", "sun"]`` to weekday numbers; ranges may wrap (``fri-mon``)."""
    days: set[int] = set()
    for spec in specs:
        first, _, last = spec.strip().lower().partition("-")
        a, b = _day(first.strip()), _day(last.strip() or first.strip())
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _day(name: str) -> int:
    """A day's number from its name or an abbreviation of at least three letters (``thurs``); only
    those: ``mon_fri`` or ``mon`` and ``fri`` joined by an en dash is no day, rather than Monday alone."""
    for number, full in enumerate(FULL_DAY_NAMES):
        if len(name) >= 3 and full.startswith(name):
            return number
    raise ValueError(f"unknown day {name!r} (use {', '.join(DAY_NAMES)} or ranges like mon-fri)")


def parse_clock(text: str) -> time:
    """``"08:00"`` to a time; ``"24:00"`` is accepted as the end of the day (midnight)."""
    hours, sep, minutes = text.strip().partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"expected a time as HH:MM, got {text!r}")
    h, m = int(hours), int(minutes)
    if (h, m) == (24, 0):
        return time(0)
    if h > 23 or m > 59:
        raise ValueError(f"no such time of day: {text!r}")
    return time(h, m)
