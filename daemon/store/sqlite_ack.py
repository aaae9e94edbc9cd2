"""The SQLite store's acknowledgement, inside the writer's transaction: who took a notification on,
its steps not yet sent superseded, and an alert group's later versions of the same incident."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from daemon.store import codec
from daemon.store.queries import load
from daemon.store.values import AckResult

Q = load("sqlite")


def acknowledge(
    conn: sqlite3.Connection, notification_id: str, by: str, via: str, now: datetime
) -> AckResult:
    """Record who took the notification on; its steps not yet sent are superseded."""
    n = conn.execute(Q["notification_by_id"], (notification_id,)).fetchone()
    if n is None or not codec.may_acknowledge(n["escalation"] is not None, via):
        return "not_found"
    if n["acknowledged_at"] is not None:
        if codec.for_the_group(n["acknowledged_via"], via):
            return _acknowledge_group(conn, notification_id, by, via, now)
        return "already"
    if not codec.acknowledgeable(n["status"], n["escalation"] is not None):
        return "finished"
    at = codec.ts(now)
    conn.execute(Q["acknowledge"], {"now": at, "by": by, "via": via, "id": notification_id})
    conn.execute(Q["supersede_pending"], (at, notification_id))
    last = conn.execute(Q["last_delivery_of"], (notification_id,)).fetchone()
    if last is not None:  # a held notification has no delivery to hang the trail's line on
        detail = codec.ack_detail(by, via)
        conn.execute(
            Q["insert_attempt"],
            (last["id"], notification_id, last["channel"], last["attempts"], at, at, "acknowledged", detail),
        )
    return "acknowledged"


def _acknowledge_group(
    conn: sqlite3.Connection, notification_id: str, by: str, via: str, now: datetime
) -> AckResult:
    """The acknowledgement of a version a newer one closed goes to the versions of the same incident
    committed after it (not past the group's resolution: an old button must not silence a new one)."""
    later = conn.execute(Q["group_versions_after"], (notification_id,)).fetchall()
    newer = codec.same_incident([(row["id"], json.loads(row["labels"])) for row in later])
    results = [acknowledge(conn, version, by, via, now) for version in newer]
    return "acknowledged" if "acknowledged" in results else "already"
