"""The PostgreSQL store's acknowledgement: the notification row is locked, then its deliveries,
in the order every other write takes them (see :mod:`daemon.store.postgres_tx`)."""

from __future__ import annotations

from datetime import datetime

from daemon.store import codec
from daemon.store.base import AckResult
from daemon.store.postgres_queries import Conn, Q, _one


async def acknowledge(conn: Conn, notification_id: str, by: str, via: str, now: datetime) -> AckResult:
    """Record who took the notification on; its steps not yet sent are superseded."""
    n = await _one(conn, Q["lock_for_ack"], (notification_id,))
    if n is None or not codec.may_acknowledge(n["escalation"] is not None, via):
        return "not_found"
    if n["acknowledged_at"] is not None:
        if codec.for_the_group(n["acknowledged_via"], via):
            return await _acknowledge_group(conn, notification_id, by, via, now)
        return "already"
    if not codec.acknowledgeable(n["status"], n["escalation"] is not None):
        return "finished"
    await conn.execute(Q["lock_deliveries_of"], (notification_id,))
    await conn.execute(Q["acknowledge"], {"now": now, "by": by, "via": via, "id": notification_id})
    await conn.execute(Q["supersede_pending"], (now, notification_id))
    last = await _one(conn, Q["last_delivery_of"], (notification_id,))
    if last is not None:  # a held notification has no delivery to hang the trail's line on
        await conn.execute(
            Q["insert_attempt"],
            (last["id"], notification_id, last["channel"], last["attempts"], now, now, "acknowledged",
             codec.ack_detail(by, via)),
        )  # fmt: skip
    return "acknowledged"


async def _acknowledge_group(conn: Conn, notification_id: str, by: str, via: str, now: datetime) -> AckResult:
    """The acknowledgement of a version a newer one closed goes to the group's open versions,
    under the group's lock (a version being committed meanwhile would miss it)."""
    group = await _one(conn, Q["group_of"], (notification_id,))
    if group is None:
        return "already"
    await conn.execute(Q["lock_group"], (group["lineage"],))
    newer = await (await conn.execute(Q["open_group_versions"], (group["lineage"],))).fetchall()
    results = [await acknowledge(conn, row["notification_id"], by, via, now) for row in newer]
    return "acknowledged" if "acknowledged" in results else "already"
