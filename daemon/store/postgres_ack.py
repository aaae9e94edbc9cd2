"""The PostgreSQL store's acknowledgement: the notification row is locked, then its deliveries,
in the order every other write takes them (see :mod:`daemon.store.postgres_queries`)."""

from __future__ import annotations

import json
from datetime import datetime

from daemon.store import codec
from daemon.store.postgres_queries import Conn, Q, _one
from daemon.store.values import AckResult


async def acknowledge(conn: Conn, notification_id: str, by: str, via: str, now: datetime) -> AckResult:
    """Record who took the notification on; its steps not yet sent are superseded.

    A version of an alert group locks its group first, as the accept path does (group, then the
    notifications it closes): the other order could deadlock with a version being committed."""
    group = await _one(conn, Q["group_of"], (notification_id,))
    if group is not None:
        await conn.execute(Q["lock_group"], (group["lineage"],))
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
    """The acknowledgement of a version a newer one closed goes to the versions of the same incident
    committed after it (not past the group's resolution: an old button must not silence a new one).
    The caller holds the group's lock: a version being committed meanwhile would miss it."""
    later = await (await conn.execute(Q["group_versions_after"], (notification_id,))).fetchall()
    newer = codec.same_incident([(row["id"], json.loads(row["labels"])) for row in later])
    results = [await acknowledge(conn, version, by, via, now) for version in newer]
    return "acknowledged" if "acknowledged" in results else "already"
