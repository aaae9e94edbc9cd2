"""The SQLite store's writes on unsent notifications, inside the writer's transaction: given the plans
of the mode in force (reroute, repin), or cancelled; one being sent is left alone."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from daemon.core.model import Mode, Plan
from daemon.store import codec
from daemon.store.queries import load
from daemon.store.sqlite_provider import current_mode
from daemon.store.sqlite_steps import _fresh_ack_code, _insert_deliveries
from daemon.store.unreadable import decode_each
from daemon.store.values import CancelResult

Q = load("sqlite")


def reroute(
    conn: sqlite3.Connection, mode: Mode, plans: Mapping[str, Plan], now: datetime, *, force: bool = False
) -> int:
    """Give unsent notifications the plan of ``mode``; anything in flight is left to finish.

    Only notifications planned for another mode move, unless ``force`` (a reloaded policy).
    """
    if current_mode(conn) != mode:
        return 0
    moved = 0
    for notification_id, plan in plans.items():
        row = conn.execute(Q["reroute_check"], (notification_id,)).fetchone()
        if row is None or row[0] not in ("pending", "held") or (row[1] == mode and not force) or row[2]:
            continue
        _replan(conn, notification_id, plan, mode, now)
        moved += 1
    return moved


def repin(conn: sqlite3.Connection, mode: Mode, now: datetime, limit: int) -> int:
    """Give up to ``limit`` unsent pinned notifications of another mode their own plan for ``mode``."""
    if current_mode(conn) != mode:
        return 0
    rows = conn.execute(Q["repin_candidates"], (mode, limit)).fetchall()
    plans, _ = decode_each(rows, lambda r: (r["id"], codec.plan(r), codec.pinned_plan(r["pinned"], mode)))
    for notification_id, current, plan in plans:  # an unreadable row stays as it is (logged)
        if replace(current, mode=mode) == plan:  # a drill's one channel in both modes
            _carry_over(conn, notification_id, mode, now)
        else:
            _replan(conn, notification_id, plan, mode, now)
    return len(plans)


def _carry_over(conn: sqlite3.Connection, notification_id: str, mode: Mode, now: datetime) -> None:
    """The same plan in ``mode``: its pending deliveries move with their attempts and backoff."""
    at = codec.ts(now)
    conn.execute(Q["carry_over_notification"], (mode, at, notification_id))
    conn.execute(Q["carry_over_deliveries"], (mode, at, notification_id))


def _replan(conn: sqlite3.Connection, notification_id: str, plan: Plan, mode: Mode, now: datetime) -> None:
    """Supersede what the notification still had to send and give it ``plan`` from its first step."""
    at = codec.ts(now)
    conn.execute(Q["supersede_pending"], (at, notification_id))
    status = "held" if plan.defer else "pending"
    columns = codec.plan_columns(plan)
    conn.execute(
        Q["replan"], (status, plan.route, mode, columns["plan"], columns["escalation"], at, notification_id)
    )
    if plan.escalation is not None:
        conn.execute(Q["give_ack_code"], (_fresh_ack_code(conn), notification_id))
    _insert_deliveries(conn, notification_id, plan, now)


def cancel(conn: sqlite3.Connection, notification_id: str, now: datetime) -> CancelResult:
    """Stop a notification that is not being sent right now; what was sent stays sent."""
    row = conn.execute(Q["reroute_check"], (notification_id,)).fetchone()
    if row is None:
        return "not_found"
    if row[0] not in ("pending", "held"):
        return "finished"
    if row[2]:
        return "in_flight"
    at = codec.ts(now)
    conn.execute(Q["supersede_pending"], (at, notification_id))
    conn.execute(Q["cancel_notification"], (at, notification_id))
    return "cancelled"
