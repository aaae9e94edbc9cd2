"""The PostgreSQL store's vendor status callbacks: each delivery's notification row is locked,
then the delivery, in the order every other write takes them (see :mod:`daemon.store.postgres_queries`)."""

from __future__ import annotations

from daemon.store.postgres_queries import Conn, Q, _one
from daemon.store.postgres_steps import _next_step
from daemon.store.values import Callback

_CALLBACK_OUTCOMES = {True: "callback:delivered", False: "callback:failed", None: "callback:status"}


async def record_callback(conn: Conn, callback: Callback, node: str) -> bool:
    """Record a vendor's status callback on every delivery that message carried; an undelivered
    message fails each one's step (each plan moves on).

    Returns whether a delivery with that remote id was found.
    """
    params = {"channel": callback.channel, "remote_id": callback.remote_id}
    found = await (await conn.execute(Q["deliveries_by_remote_id"], params)).fetchall()
    for row in found:
        await _callback_one(conn, row["id"], callback, node)
    return bool(found)


async def _callback_one(conn: Conn, delivery_id: int, callback: Callback, node: str) -> None:
    n = await _one(conn, Q["lock_notification_of_delivery"], (delivery_id,))
    d = await _one(conn, Q["lock_delivery"], (delivery_id,))
    assert n is not None, "a delivery has a notification"
    assert d is not None, "a delivery found a moment ago in this transaction"
    outcome = _CALLBACK_OUTCOMES[callback.delivered]
    at = callback.at
    await conn.execute(
        Q["insert_attempt"],
        (d["id"], d["notification_id"], d["channel"], d["attempts"], at, at, outcome, callback.detail),
    )
    if callback.delivered is False and d["state"] == "delivered":
        await conn.execute(Q["mark_failed"], (callback.detail, at, d["id"]))
        await conn.execute(Q["reopen_notification"], (at, d["notification_id"]))
        await _next_step(conn, n, d, at, node)
