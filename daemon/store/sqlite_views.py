"""The SQLite store's reads that build views, each a function of the reader thread's connection."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from daemon.core.health import Transition
from daemon.core.model import CheckResult, ProviderState
from daemon.store import codec, unreadable
from daemon.store.queries import load
from daemon.store.values import AttemptView, ChannelHealth, NotificationView, ProviderView, QueueView

Q = load("sqlite")


def provider(conn: sqlite3.Connection, events: int, checks: int) -> ProviderView:
    row = conn.execute(Q["provider"]).fetchone()
    return ProviderView(
        state=ProviderState(row["state"]),
        mode=row["mode"],
        snapshot=codec.snapshot(row["snapshot"]),
        events=tuple(codec.transition(r) for r in conn.execute(Q["recent_events"], (events,))),
        checks=tuple(codec.check_result(r) for r in conn.execute(Q["recent_checks"], (checks,))),
    )


def queue(conn: sqlite3.Connection) -> QueueView:
    return QueueView(
        notifications=dict(conn.execute(Q["notification_counts"]).fetchall()),
        deliveries=dict(conn.execute(Q["delivery_counts"]).fetchall()),
        oldest_pending_at=codec.maybe_dt(conn.execute(Q["oldest_pending"]).fetchone()[0]),
    )


def history(conn: sqlite3.Connection, since: datetime) -> tuple[list[Transition], list[CheckResult]]:
    at = codec.ts(since)
    events = [codec.transition(r) for r in conn.execute(Q["events_since"], (at,))]
    return events, [codec.check_result(r) for r in conn.execute(Q["checks_since"], (at,))]


def notification(conn: sqlite3.Connection, notification_id: str) -> NotificationView | None:
    row = conn.execute(Q["notification_by_id"], (notification_id,)).fetchone()
    if row is None:
        return None
    return NotificationView(
        notification=codec.notification(row),
        status=row["status"],
        route=row["route"],
        mode=row["mode"],
        plan=tuple(json.loads(row["plan"])),
        deliveries=tuple(codec.delivery(d) for d in conn.execute(Q["deliveries_of"], (notification_id,))),
        attempts=tuple(_attempt(a) for a in conn.execute(Q["attempts_of"], (notification_id,))),
    )


def notifications(
    conn: sqlite3.Connection, query: str, params: Sequence[Any] | Mapping[str, Any]
) -> tuple[list[NotificationView], int]:
    """The views of the notifications whose ids ``query`` selects, in its order (one reader call),
    but for those that cannot be decoded (:mod:`daemon.store.unreadable`), and how many ids it got."""
    ids = [row[0] for row in conn.execute(Q[query], params).fetchall()]
    found, _ = unreadable.decode_each(ids, lambda nid: notification(conn, nid), str, (sqlite3.Error,))
    return [view for view in found if view is not None], len(ids)


def channel_health(conn: sqlite3.Connection) -> list[ChannelHealth]:
    return [_health(row) for row in conn.execute(Q["channel_health"]).fetchall()]


def _health(row: sqlite3.Row) -> ChannelHealth:
    return ChannelHealth(
        channel=row["channel"],
        last_success_at=codec.maybe_dt(row["last_success_at"]),
        last_failure_at=codec.maybe_dt(row["last_failure_at"]),
        last_error=row["last_error"],
        consecutive_failures=row["consecutive_failures"],
    )


def _attempt(row: sqlite3.Row) -> AttemptView:
    return AttemptView(
        delivery_id=row["delivery_id"],
        channel=row["channel"],
        attempt=row["attempt"],
        started_at=codec.dt(row["started_at"]),
        finished_at=codec.dt(row["finished_at"]),
        outcome=row["outcome"],
        detail=row["detail"],
    )
