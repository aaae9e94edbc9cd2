"""The SQLite store's vendor status callbacks, inside the writer's transaction: recorded on each
delivery the message carried; an undelivered one fails its step and the plan moves on."""

from __future__ import annotations

import sqlite3

from daemon.store import codec
from daemon.store.queries import load
from daemon.store.sqlite_steps import _next_step
from daemon.store.values import Callback

Q = load("sqlite")


_CALLBACK_OUTCOMES = {True: "callback:delivered", False: "callback:failed", None: "callback:status"}


def record_callback(conn: sqlite3.Connection, callback: Callback) -> bool:
    """Record a vendor's status callback on every delivery that message carried; an undelivered
    message fails each one's step (each plan moves on).

    Returns whether a delivery with that remote id was found.
    """
    found = conn.execute(
        Q["deliveries_by_remote_id"], (callback.channel, callback.remote_id, callback.remote_id)
    ).fetchall()
    for d in found:
        _callback_one(conn, d, callback)
    return bool(found)


def _callback_one(conn: sqlite3.Connection, d: sqlite3.Row, callback: Callback) -> None:
    at = codec.ts(callback.at)
    outcome = _CALLBACK_OUTCOMES[callback.delivered]
    conn.execute(
        Q["insert_attempt"],
        (d["id"], d["notification_id"], d["channel"], d["attempts"], at, at, outcome, callback.detail),
    )
    if callback.delivered is False and d["state"] == "delivered":
        conn.execute(Q["mark_failed"], (callback.detail, at, d["id"]))
        conn.execute(Q["reopen_notification"], (at, d["notification_id"]))
        _next_step(conn, d, at)
