"""The PostgreSQL store's writes on unsent notifications, in the caller's transaction: the same as
:mod:`daemon.store.sqlite_reroutes`, each notification and its deliveries locked first (one being
claimed elsewhere is then seen in flight), and the new work announced."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from daemon.core.model import Mode, Plan
from daemon.store import codec
from daemon.store.postgres_queries import WORK_CHANNEL, Conn, Q, _one
from daemon.store.postgres_steps import _fresh_ack_code, _insert_deliveries
from daemon.store.unreadable import decode_each
from daemon.store.values import CancelResult


async def reroute(
    conn: Conn, mode: Mode, plans: Mapping[str, Plan], now: datetime, node: str, *, force: bool = False
) -> int:
    """Give unsent notifications the plan of ``mode``; anything in flight is left to finish.

    Only notifications planned for another mode move, unless ``force`` (a reloaded policy).
    """
    row = await _one(conn, Q["current_mode_shared"], ())
    if row is None or row["mode"] != mode:
        return 0
    moved = 0
    for notification_id in sorted(plans):
        if await _replan(conn, notification_id, plans[notification_id], mode, now, force=force):
            moved += 1
    if moved:
        await conn.execute(Q["notify_work"], (WORK_CHANNEL, node))
    return moved


async def repin(conn: Conn, mode: Mode, now: datetime, limit: int, node: str) -> int:
    """Give up to ``limit`` unsent pinned notifications of another mode their own plan for ``mode``."""
    row = await _one(conn, Q["current_mode_shared"], ())
    if row is None or row["mode"] != mode:
        return 0
    rows = await (await conn.execute(Q["repin_candidates"], (mode, limit))).fetchall()
    ordered = sorted(rows, key=lambda r: str(r["id"]))  # the lock order reroute keeps
    plans, _ = decode_each(ordered, lambda r: (r["id"], codec.plan(r), codec.pinned_plan(r["pinned"], mode)))
    moved = 0
    for notification_id, current, plan in plans:  # an unreadable row stays as it is (logged)
        if replace(current, mode=mode) == plan:  # a drill's one channel in both modes
            moved += await _carry_over(conn, notification_id, mode, now)
        elif await _replan(conn, notification_id, plan, mode, now, force=False):
            moved += 1
    if moved:
        await conn.execute(Q["notify_work"], (WORK_CHANNEL, node))
    return moved


async def _carry_over(conn: Conn, notification_id: str, mode: Mode, now: datetime) -> bool:
    """The same plan in ``mode``: its pending deliveries move with their attempts and backoff."""
    if not await _movable(conn, notification_id, mode, force=False):
        return False
    await conn.execute(Q["carry_over_notification"], (mode, now, notification_id))
    await conn.execute(Q["carry_over_deliveries"], (mode, now, notification_id))
    return True


async def _movable(conn: Conn, notification_id: str, mode: Mode, *, force: bool) -> bool:
    """Lock the notification and its deliveries; whether it is unsent, of another mode (unless
    ``force``) and has nothing in flight."""
    n = await _one(conn, Q["lock_notification"], (notification_id,))
    if n is None or n["status"] not in ("pending", "held") or (n["mode"] == mode and not force):
        return False
    # Locking the deliveries waits out a claim being committed elsewhere, then sees it in flight.
    states = await (await conn.execute(Q["lock_deliveries_of"], (notification_id,))).fetchall()
    return not any(s["state"] == "in_flight" for s in states)


async def _replan(
    conn: Conn, notification_id: str, plan: Plan, mode: Mode, now: datetime, *, force: bool
) -> bool:
    if not await _movable(conn, notification_id, mode, force=force):
        return False
    await conn.execute(Q["supersede_pending"], (now, notification_id))
    status = "held" if plan.defer else "pending"
    columns = codec.plan_columns(plan)
    await conn.execute(
        Q["replan"], (status, plan.route, mode, columns["plan"], columns["escalation"], now, notification_id)
    )
    if plan.escalation is not None:
        await conn.execute(Q["give_ack_code"], (await _fresh_ack_code(conn), notification_id))
    await _insert_deliveries(conn, notification_id, plan, now)
    return True


async def cancel(conn: Conn, notification_id: str, now: datetime) -> CancelResult:
    """Stop a notification that is not being sent right now; what was sent stays sent."""
    n = await _one(conn, Q["lock_notification"], (notification_id,))
    if n is None:
        return "not_found"
    if n["status"] not in ("pending", "held"):
        return "finished"
    states = await (await conn.execute(Q["lock_deliveries_of"], (notification_id,))).fetchall()
    if any(s["state"] == "in_flight" for s in states):
        return "in_flight"
    await conn.execute(Q["supersede_pending"], (now, notification_id))
    await conn.execute(Q["cancel_notification"], (now, notification_id))
    return "cancelled"
