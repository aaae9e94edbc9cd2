"""A notification's plan in rows: the deliveries of its steps inserted, an escalation's ack code drawn,
and the plan moved on when a step failed for good.

Shared by the writes of :mod:`daemon.store.postgres_accept_tx`, :mod:`daemon.store.postgres_reroutes`,
:mod:`daemon.store.postgres_claims` (record) and the delivery callbacks
(:mod:`daemon.store.postgres_callbacks`), in the lock order set out in :mod:`daemon.store.postgres_queries`.
"""

from __future__ import annotations

import json
from datetime import datetime

from psycopg.rows import DictRow

from daemon.core.model import Plan
from daemon.store import codec
from daemon.store.base import StoreError
from daemon.store.postgres_queries import WORK_CHANNEL, Conn, Q, _one


async def _fresh_ack_code(conn: Conn) -> str:
    """A random code no open escalation holds.

    Two nodes storing escalations at once may draw the same code unseen by each other (one in
    a billion per pair); the code then finds the newer of the two.
    """
    for _ in range(codec.ACK_CODE_DRAWS):
        code = codec.random_ack_code()
        if await _one(conn, Q["ack_code_taken"], (code,)) is None:
            return code
    raise StoreError(f"no free ack code in {codec.ACK_CODE_DRAWS} draws")


async def _insert_deliveries(conn: Conn, notification_id: str, plan: Plan, now: datetime) -> None:
    """The plan's first step now; an escalation's every step at once, each due at its time."""
    if plan.defer:
        return
    schedule = [(0, plan.steps[0], now)] if plan.escalation is None else plan.escalation.schedule(now)
    for step, channel, due in schedule:
        await conn.execute(
            Q["insert_delivery"], (notification_id, plan.mode, plan.route, step, channel, due, now, now)
        )


async def _next_step(conn: Conn, n: DictRow, delivery: DictRow, now: datetime, node: str) -> None:
    """A step failed for good: move the plan on, or fail the notification when none is left."""
    if n["acknowledged_at"] is not None:
        return
    if n["escalation"] is not None:
        await _hurry_next_step(conn, n, delivery, now, node)
        return
    steps = json.loads(n["plan"])
    step = delivery["step"] + 1
    if n["mode"] != delivery["mode"] or step >= len(steps):
        if n["mode"] == delivery["mode"]:
            await conn.execute(Q["set_notification_status"], ("failed", now, n["id"]))
        return
    await conn.execute(
        Q["insert_delivery"],
        (n["id"], delivery["mode"], delivery["route"], step, steps[step], now, now, now),
    )
    await conn.execute(Q["advance_step"], (step, now, n["id"]))
    await conn.execute(Q["notify_work"], (WORK_CHANNEL, node))


async def _hurry_next_step(conn: Conn, n: DictRow, delivery: DictRow, now: datetime, node: str) -> None:
    """An escalation's channel failed for good: its next step is due now; failed when nothing is left."""
    if n["mode"] != delivery["mode"]:
        return
    params = {"now": now, "id": n["id"], "mode": delivery["mode"], "step": delivery["step"] + 1}
    if (await conn.execute(Q["hurry_step"], params)).rowcount:
        await conn.execute(Q["notify_work"], (WORK_CHANNEL, node))
    live = await _one(conn, Q["live_deliveries"], (n["id"], delivery["mode"]))
    if live is not None and live["n"] == 0:
        await conn.execute(Q["set_notification_status"], ("failed", now, n["id"]))
