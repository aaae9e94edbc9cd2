"""Burst digests: when to send one, and what it says.

Pure: no I/O, no clock. :func:`next_send` decides, for one paced channel, what its next send
slot carries; :func:`build` writes a digest that fits the channel's size limit, which the caller
supplies as a ``fits`` predicate (GSM-7 segments for SMS, characters for Slack), so this module
knows no channel.

A digest counts every notification it stands for, by severity; it lists the most important
subjects first (severity rank, then age) with duplicates (the same Alertmanager fingerprint or
idempotency key) collapsed into one line, and ends with a link to the full list. What does not
fit is dropped in this order: subject lines (from the least important), the link, the counts by
severity; the total always stays.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from daemon.core.model import Severity

#: the placeholder in a digest link that becomes the oldest listed notification's time
SINCE = "{since}"


@dataclass(frozen=True, slots=True)
class Pending:
    """What the decision needs to know of one claimed delivery waiting for a send slot."""

    severity: Severity
    #: send slots (pace tokens) it takes when sent on its own: SMS segments times numbers, else 1
    cost: float
    #: deliveries with the same destination may share a digest
    destination: Hashable
    #: never carried in a digest: an escalation step, whose message holds its ACK code and button
    alone: bool = False
    #: the digest it was sent in before (cut short by a crash or a lease taken over, or failed)
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Choice:
    """The next send: one delivery on its own, or several as one digest (indexes into the pending)."""

    kind: Literal["single", "digest"]
    indexes: tuple[int, ...]
    #: whether a burst is on after this send (pass it back in as ``bursting`` next time)
    bursting: bool


def next_send(
    pending: Sequence[Pending], *, pace_per_s: float, drain_target_s: float, bursting: bool
) -> Choice | None:
    """What the next send slot carries.

    Within the drain target everything goes on its own, oldest first. Past it, a burst opens with
    the oldest critical delivery on its own (the page nobody should wait for), then every slot
    carries one digest: everything pending for the oldest delivery's destination (one delivery
    alone for its destination goes as itself). A burst lasts
    until a slot finds at most one delivery waiting, so its tail does not trickle out one by one.
    A delivery that must go ``alone`` goes on its own ahead of the digests (it still takes a slot).
    Before all that, deliveries sent in a digest before (its ``group``) go again as that group,
    so the digest keeps its id whatever else waits.
    """
    if not pending:
        return None
    group = next((p.group for p in pending if p.group is not None), None)
    if group is not None:
        same = tuple(i for i, p in enumerate(pending) if p.group == group)
        return Choice("digest" if len(same) > 1 else "single", same, bursting=True)
    within = sum(p.cost for p in pending) / pace_per_s <= drain_target_s
    if len(pending) == 1 or (within and not bursting):
        return Choice("single", (0,), bursting=False)
    lone = None
    if not bursting:
        lone = next((i for i, p in enumerate(pending) if p.severity is Severity.CRITICAL), None)
    if lone is None:
        lone = next((i for i, p in enumerate(pending) if p.alone), None)
    if lone is not None:
        return Choice("single", (lone,), bursting=True)
    destination = pending[0].destination
    same = tuple(i for i, p in enumerate(pending) if p.destination == destination)
    if len(same) == 1:  # the only one for its destination goes as itself, not as a digest of one
        return Choice("single", same, bursting=True)
    return Choice("digest", same, bursting=True)


@dataclass(frozen=True, slots=True)
class Item:
    """One notification as a digest sees it."""

    #: duplicates share it: the Alertmanager fingerprint if there is one, else the idempotency key
    key: str
    severity: Severity
    subject: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Layout:
    """How a digest reads on one kind of channel."""

    #: SMS: one line and short severity words (160 characters go fast)
    compact: bool
    #: the longest subject shown, in characters
    subject_max: int


SLACK_LAYOUT = Layout(compact=False, subject_max=150)
SMS_LAYOUT = Layout(compact=True, subject_max=40)

_SHORT = {Severity.CRITICAL: "crit", Severity.HIGH: "high", Severity.WARNING: "warn", Severity.INFO: "info"}


@dataclass(frozen=True, slots=True)
class Digest:
    id: str
    #: the most severe of what it carries
    severity: Severity
    total: int
    counts: Mapping[Severity, int]
    headline: str
    body: str
    #: distinct subjects listed in the body
    listed: int


@dataclass(frozen=True, slots=True)
class _Line:
    severity: Severity
    created_at: datetime
    subject: str
    count: int


def build(
    digest_id: str,
    items: Sequence[Item],
    *,
    fits: Callable[[str, str], bool],
    layout: Layout,
    top: int,
    link: str | None,
) -> Digest:
    """The digest of ``items`` that ``fits(headline, body)``; ValueError if not even the total fits."""
    if not items:
        raise ValueError("a digest of nothing")
    counts = Counter(item.severity for item in items)
    lines = _lines(items)
    oldest = min(item.created_at for item in items)
    url = None if link is None else link.replace(SINCE, oldest.strftime("%Y-%m-%dT%H:%M:%SZ"))
    severity = min(counts, key=lambda s: s.rank)
    for headline in _headlines(digest_id, len(items), counts, layout):
        for shown, with_link in _shapes(min(top, len(lines)), url is not None):
            body = _body(lines, shown, url if with_link else None, layout)
            if fits(headline, body):
                return Digest(digest_id, severity, len(items), dict(counts), headline, body, shown)
    raise ValueError(f"digest {digest_id}: not even its total fits the channel's size limit")


def _lines(items: Sequence[Item]) -> list[_Line]:
    """One line per duplicate key, most severe first, then oldest."""
    first: dict[str, _Line] = {}
    for item in items:
        seen = first.get(item.key)
        if seen is None:
            first[item.key] = _Line(item.severity, item.created_at, item.subject, 1)
            continue
        worst = min(seen.severity, item.severity, key=lambda s: s.rank)
        first[item.key] = _Line(worst, min(seen.created_at, item.created_at), seen.subject, seen.count + 1)
    return sorted(first.values(), key=lambda line: (line.severity.rank, line.created_at, line.subject))


def _shapes(most: int, has_link: bool) -> list[tuple[int, bool]]:
    """(subjects listed, with the link) from the richest to the barest."""
    if not has_link:
        return [(shown, False) for shown in range(most, -1, -1)]
    return [*((shown, True) for shown in range(most, -1, -1)), (0, False)]


def _headlines(digest_id: str, total: int, counts: Mapping[Severity, int], layout: Layout) -> list[str]:
    noun = "alerts" if layout.compact else "notifications"
    by_severity = ", ".join(
        f"{counts[s]} {_SHORT[s] if layout.compact else s.value}" for s in Severity if counts.get(s)
    )
    return [f"Digest {digest_id}: {total} {noun} ({by_severity})", f"Digest {digest_id}: {total} {noun}"]


def _body(lines: Sequence[_Line], shown: int, url: str | None, layout: Layout) -> str:
    listed = [_line(line, layout) for line in lines[:shown]]
    more = len(lines) - shown
    tail = f"+{more} more" if more else ""
    if url is not None:
        tail = f"{tail}: {url}" if tail else f"list: {url}"
    parts = listed + ([tail] if tail else [])
    return ("; " if layout.compact else "\n").join(parts)


def _line(line: _Line, layout: Layout) -> str:
    subject = _cut(" ".join(line.subject.split()), layout.subject_max, layout)
    # "x3", not a multiplication sign: outside GSM-7 it would make a whole SMS UCS-2
    times = f" x{line.count}" if line.count > 1 else ""
    if layout.compact:
        return subject + times
    return f"• {line.severity.value}: {subject}{times}"


def _cut(text: str, limit: int, layout: Layout) -> str:
    if len(text) <= limit:
        return text
    ellipsis = "..." if layout.compact else "\u2026"
    return text[: limit - len(ellipsis)].rstrip() + ellipsis
