"""The PostgreSQL store's claims and their outcomes, in the caller's transaction: the same as
:mod:`daemon.store.sqlite_claims`, with claims taken ``FOR UPDATE SKIP LOCKED`` under a lease on
the database's clock, and an outcome applied only by the node holding the claim."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from psycopg.rows import DictRow

from daemon.core.model import Mode
from daemon.store import codec
from daemon.store.postgres_queries import Conn, Q, _one, epochs
from daemon.store.postgres_steps import _next_step
from daemon.store.unreadable import decode_each
from daemon.store.values import Claimed, Outcome

#: what a claim read in its transaction: the deliveries' rows and their notifications' rows by id
ClaimedRows = tuple[list[DictRow], dict[str, DictRow]]


async def claim(
    conn: Conn, channel: str, limit: int, now: datetime, lease_until: datetime, node: str
) -> ClaimedRows:
    """Claim due deliveries and expired leases; the new lease runs on the database's clock.
    :func:`claimed` decodes the rows, after the commit."""
    params = {"channel": channel, "limit": limit, "now": now, "lease": lease_until - now, "node": node}
    rows = await (await conn.execute(Q["claim"], params)).fetchall()
    if not rows:
        return [], {}
    ids = list({row["notification_id"] for row in rows})
    notes = await (await conn.execute(Q["notifications_by_ids"], (ids,))).fetchall()
    return rows, {n["id"]: n for n in notes}


def claimed(read: ClaimedRows) -> tuple[list[Claimed], list[tuple[DictRow, str]]]:
    """The claims decoded, oldest due first, and the deliveries' rows that could not be, with why
    (:mod:`daemon.store.unreadable`)."""
    rows, notifications = read

    def decode(r: DictRow) -> Claimed:
        n = notifications[r["notification_id"]]
        then = codec.then(n, r["step"])
        return Claimed(codec.delivery(epochs(r)), codec.notification(epochs(n)), codec.open_ack_code(n), then)

    ordered = sorted(rows, key=lambda r: (r["next_attempt_at"], r["id"]))
    return decode_each(ordered, decode, lambda r: r["notification_id"])


async def record(conn: Conn, outcomes: Sequence[Outcome], now: datetime, node: str) -> None:
    row = await _one(conn, Q["current_mode_shared"], ())
    assert row is not None, "the provider row is created by the first migration"
    for outcome in sorted(outcomes, key=lambda o: o.delivery_id):
        await _record_one(conn, outcome, row["mode"], now, node)


async def fail_stranded(
    conn: Conn, channel: str, before: datetime, limit: int, detail: str, now: datetime, node: str
) -> int:
    """Take and fail in one transaction, locking as recording does (the notification, then its
    delivery), so nothing is left in flight and no lock is taken out of order."""
    row = await _one(conn, Q["current_mode_shared"], ())
    assert row is not None, "the provider row is created by the first migration"
    params = {"channel": channel, "before": before, "limit": limit}
    picked = await (await conn.execute(Q["stranded"], params)).fetchall()
    failed = 0
    for p in sorted(picked, key=lambda r: r["id"]):
        await _one(conn, Q["lock_notification_of_delivery"], (p["id"],))
        if await _one(conn, Q["take_stranded"], {"id": p["id"], "before": before, "node": node, "now": now}):
            await _record_one(conn, Outcome(p["id"], "failed", now, now, detail), row["mode"], now, node)
            failed += 1
    return failed


async def _record_one(conn: Conn, outcome: Outcome, mode: Mode, now: datetime, node: str) -> None:
    n = await _one(conn, Q["lock_notification_of_delivery"], (outcome.delivery_id,))
    d = await _one(conn, Q["lock_delivery"], (outcome.delivery_id,))
    assert n is not None, f"no delivery {outcome.delivery_id}"
    assert d is not None, f"no delivery {outcome.delivery_id}"
    await conn.execute(
        Q["insert_attempt"],
        (d["id"], d["notification_id"], d["channel"], d["attempts"], outcome.started_at,
         outcome.finished_at, outcome.kind, outcome.detail),
    )  # fmt: skip
    # A node whose lease ran out and was taken over reports late: its outcome is history only,
    # the claim's state belongs to the node holding it now, this node's own new claim included.
    if d["state"] != "in_flight" or d["claimed_by"] != node or outcome.stale(d["state"], d["attempts"]):
        return
    if outcome.kind == "delivered":
        remote_id = codec.remote_ids(d["remote_id"], outcome.remote_id)
        await conn.execute(Q["mark_delivered"], (remote_id, now, d["id"]))
        await conn.execute(Q["set_notification_status"], ("delivered", now, d["notification_id"]))
        if mode != d["mode"]:
            # Sent across a mode change (in flight, so the rerouter left it): it reached someone,
            # so its old mode's later steps stop, as supersede_stale_escalations stops them.
            await conn.execute(Q["supersede_mode_of"], (now, d["notification_id"], d["mode"]))
        return
    if outcome.remote_id is not None:  # reached some of its targets before it failed
        kept = codec.remote_ids(d["remote_id"], outcome.remote_id)
        await conn.execute(Q["keep_remote_id"], (kept, d["id"]))
    if outcome.kind == "retry":
        assert outcome.retry_at is not None, "a retry needs a time"
        # taken on while this send was in flight, or email came back after another step reached someone
        if codec.stale_step(n, d["mode"], mode):
            await conn.execute(Q["supersede_delivery"], (outcome.detail, now, d["id"]))
        else:
            await conn.execute(Q["mark_retry"], (outcome.retry_at, outcome.detail, now, d["id"]))
    else:
        await conn.execute(Q["mark_failed"], (outcome.detail, now, d["id"]))
        await _next_step(conn, n, d, now, node)
