"""A notification's plan in the SQLite store's rows: the deliveries of its steps inserted, an
escalation's ack code drawn, and the plan moved on when a step failed for good.

Shared by the writes of :mod:`daemon.store.sqlite_accept_tx` (accept),
:mod:`daemon.store.sqlite_reroutes`, :mod:`daemon.store.sqlite_claims` (record) and
:mod:`daemon.store.sqlite_callbacks`.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from daemon.core.model import Plan
from daemon.store import codec
from daemon.store.base import StoreError
from daemon.store.queries import load

Q = load("sqlite")


def _fresh_ack_code(conn: sqlite3.Connection) -> str:
    """A random code no open escalation holds (the writer runs one transaction at a time)."""
    for _ in range(codec.ACK_CODE_DRAWS):
        code = codec.random_ack_code()
        if conn.execute(Q["ack_code_taken"], (code,)).fetchone() is None:
            return code
    raise StoreError(f"no free ack code in {codec.ACK_CODE_DRAWS} draws")


def _insert_deliveries(conn: sqlite3.Connection, notification_id: str, plan: Plan, now: datetime) -> None:
    """The plan's first step now; an escalation's every step at once, each due at its time."""
    if plan.defer:
        return
    at = codec.ts(now)
    schedule = [(0, plan.steps[0], now)] if plan.escalation is None else plan.escalation.schedule(now)
    for step, channel, due in schedule:
        conn.execute(
            Q["insert_delivery"],
            (notification_id, plan.mode, plan.route, step, channel, codec.ts(due), at, at),
        )


def _next_step(conn: sqlite3.Connection, delivery: sqlite3.Row, now: float) -> None:
    """A step failed for good: move the plan on, or fail the notification when none is left."""
    n = conn.execute(Q["notification_by_id"], (delivery["notification_id"],)).fetchone()
    if n["acknowledged_at"] is not None:
        return
    if n["escalation"] is not None:
        _hurry_next_step(conn, n, delivery, now)
        return
    steps = json.loads(n["plan"])
    step = delivery["step"] + 1
    if n["mode"] != delivery["mode"] or step >= len(steps):
        if n["mode"] == delivery["mode"]:
            conn.execute(Q["set_notification_status"], ("failed", now, n["id"]))
        return
    conn.execute(
        Q["insert_delivery"],
        (n["id"], delivery["mode"], delivery["route"], step, steps[step], now, now, now),
    )
    conn.execute(Q["advance_step"], (step, now, n["id"]))


def _hurry_next_step(conn: sqlite3.Connection, n: sqlite3.Row, delivery: sqlite3.Row, now: float) -> None:
    """An escalation's channel failed for good: its next step is due now; failed when nothing is left."""
    if n["mode"] != delivery["mode"]:
        return
    params = {"now": now, "id": n["id"], "mode": delivery["mode"], "step": delivery["step"] + 1}
    conn.execute(Q["hurry_step"], params)
    (live,) = conn.execute(Q["live_deliveries"], (n["id"], delivery["mode"])).fetchone()
    if live == 0:
        conn.execute(Q["set_notification_status"], ("failed", now, n["id"]))
