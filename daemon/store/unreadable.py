"""Rows the codec cannot read: left where they are, logged, and the rest of the outbox moves on.

A row can be unreadable without being corrupt: another release wrote a value this one does not
know (a severity, say; on a PostgreSQL cluster in a rolling upgrade, a newer node), or someone
edited it by hand. Decoding such a row used to raise out of the read that met it: a claim left
every delivery claimed with it in flight until its lease ran out, then claimed the same row again,
so nothing more went out on that channel; a re-plan after a mode change (the moment an outage is
declared) raised out of the dispatcher, which stopped the daemon (and under systemd, restarted
it into the same row); a page of the API's list was a 500.

Now nothing is failed for such a row, since a node that can read it may yet send it:

- a claim answers the deliveries it could read and puts each unreadable one back, due again in
  :data:`RETRY`, its claim not counted as an attempt, ``last_error`` saying why: on a cluster a
  node that can read it takes it; a row nobody can read comes back every :data:`RETRY`, logged
  each time, until it is cancelled (``POST /v1/notifications/{id}/cancel`` decodes nothing) or
  mended;
- the re-plans (a mode change's sweep and re-pin, a reload's replan, the start's rescue) and the
  lists (the API's, the status page's) read past it, and a page is short only at the end;
- a read of that one notification (``GET /v1/notifications/{id}``) raises :class:`Unreadable`,
  which says why.

Each time, an ``ERROR`` line with ``event: notification.unreadable`` names it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from daemon.store.base import Unreadable

log = logging.getLogger(__name__)

Row = TypeVar("Row")
T = TypeVar("T")

#: how long an unreadable claimed delivery waits before it is claimed again
RETRY = timedelta(minutes=1)


def reason(exc: Exception) -> str:
    return f"its row cannot be read from the outbox ({type(exc).__name__}: {exc})"


def decode_each(
    rows: Iterable[Row],
    decode: Callable[[Row], T],
    notification_id: Callable[[Row], str] = lambda row: str(row["id"]),  # type: ignore[index]
    database_errors: tuple[type[Exception], ...] = (),
) -> tuple[list[T], list[tuple[Row, str]]]:
    """Each row decoded, and the rows that could not be, with why (each logged). The rows are a
    notification's (its ``id``) unless ``notification_id`` says where that is. ``decode`` may
    query the database: its ``database_errors`` are the store's failing, not the row's."""
    decoded, unreadable = [], []
    for row in rows:
        try:
            decoded.append(decode(row))
        except database_errors:
            raise
        except Exception as exc:  # whatever a row holds, the rows beside it are read
            why = reason(exc)
            unreadable.append((row, why))
            left_out(notification_id(row), why)
    return decoded, unreadable


def refused(notification_id: str, exc: Exception) -> Unreadable:
    """The error for a read of one notification whose row could not be decoded (logged)."""
    why = reason(exc)
    left_out(notification_id, why)
    return Unreadable(notification_id, why)


def left_out(notification_id: str, why: str) -> None:
    log.error(
        "notification %s: %s",
        notification_id,
        why,
        extra={"event": "notification.unreadable", "notification_id": notification_id},
    )


async def fill(read: Callable[[int], Awaitable[tuple[list[T], int]]], limit: int) -> list[T]:
    """Up to ``limit`` items of a read with a ``LIMIT``: ``read(n)`` answers what it could decode
    of its first ``n`` rows and how many rows it got. Read again, twice as far each time, while
    rows it could not decode left the page short, so that a short page still means the end."""
    want = limit
    while True:
        found, got = await read(want)
        if len(found) >= limit or got < want:
            return found[:limit]
        want = max(2 * want, limit + got - len(found))


async def put_back(
    release: Callable[[Sequence[tuple[int, str]], datetime], Awaitable[None]],
    unreadable: Sequence[tuple[Any, str]],
    now: datetime,
) -> None:
    """Each unreadable claimed delivery (a row with ``id``) pending again, due in :data:`RETRY`,
    its claim not counted as an attempt (the store's ``release``); if even that cannot be
    written, it waits in flight for its lease to end."""
    try:
        await release([(row["id"], why) for row, why in unreadable], now)
    except Exception:
        log.exception("unreadable deliveries could not be put back; they wait for their lease to end")
