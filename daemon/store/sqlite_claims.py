"""The SQLite store's claims and their outcomes, inside the writer's transaction: due deliveries
claimed under a lease, each send's outcome recorded (delivered, retried, or failed and the plan
moved on), and the deliveries stranded in flight failed."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime

from daemon.core.model import Mode
from daemon.store import codec
from daemon.store.queries import load
from daemon.store.sqlite_provider import current_mode
from daemon.store.sqlite_steps import _next_step
from daemon.store.unreadable import decode_each
from daemon.store.values import Claimed, Outcome

Q = load("sqlite")


#: delivery states no outcome changes any more
SETTLED = frozenset({"delivered", "failed", "superseded"})


#: what a claim read in its transaction: the deliveries' rows and their notifications' rows by id
ClaimedRows = tuple[list[sqlite3.Row], dict[str, sqlite3.Row]]


def claim(
    conn: sqlite3.Connection, channel: str, limit: int, now: datetime, lease_until: datetime
) -> ClaimedRows:
    """The rows of the deliveries claimed; :func:`claimed` decodes them, after the commit (decoding
    costs about 25 µs of Python a delivery, which the write lock need not wait for)."""
    params = {"channel": channel, "limit": limit, "now": codec.ts(now), "lease_until": codec.ts(lease_until)}
    rows = conn.execute(Q["claim"], params).fetchall()
    if not rows:
        return [], {}
    # One query for every claimed delivery's notification, not one per delivery.
    ids = json.dumps([row["notification_id"] for row in rows])
    return rows, {n["id"]: n for n in conn.execute(Q["notifications_by_ids"], (ids,))}


def claimed(read: ClaimedRows) -> tuple[list[Claimed], list[tuple[sqlite3.Row, str]]]:
    """The claims decoded, oldest due first, and the deliveries' rows that could not be, with why
    (:mod:`daemon.store.unreadable`)."""
    rows, notifications = read

    def decode(row: sqlite3.Row) -> Claimed:
        n = notifications[row["notification_id"]]
        then = codec.then(n, row["step"])
        return Claimed(codec.delivery(row), codec.notification(n), codec.open_ack_code(n), then)

    ordered = sorted(rows, key=lambda r: (r["next_attempt_at"], r["id"]))
    return decode_each(ordered, decode, lambda row: row["notification_id"])


def record(conn: sqlite3.Connection, outcomes: Sequence[Outcome], now: datetime) -> None:
    at = codec.ts(now)
    mode = current_mode(conn)  # recording outcomes never changes it
    for outcome in outcomes:
        _record_one(conn, outcome, at, mode)


def fail_stranded(
    conn: sqlite3.Connection, channel: str, before: datetime, limit: int, detail: str, now: datetime
) -> int:
    """Claim and fail in one transaction: nothing is left in flight between the two."""
    params = {"channel": channel, "limit": limit, "now": codec.ts(before), "lease_until": codec.ts(now)}
    rows = conn.execute(Q["claim"], params).fetchall()
    mode = current_mode(conn)
    for row in rows:
        _record_one(conn, Outcome(row["id"], "failed", now, now, detail), codec.ts(now), mode)
    return len(rows)


def _record_one(conn: sqlite3.Connection, outcome: Outcome, now: float, mode: Mode) -> None:
    d = conn.execute(Q["delivery_by_id"], (outcome.delivery_id,)).fetchone()
    conn.execute(
        Q["insert_attempt"],
        (
            d["id"],
            d["notification_id"],
            d["channel"],
            d["attempts"],
            codec.ts(outcome.started_at),
            codec.ts(outcome.finished_at),
            outcome.kind,
            outcome.detail,
        ),
    )
    # Settled already (a record retried after a commit whose sync failed): history only, never
    # applied twice (a failed step would insert its next step again).
    if d["state"] in SETTLED or outcome.stale(d["state"], d["attempts"]):
        return
    if outcome.kind == "delivered":
        conn.execute(Q["mark_delivered"], (codec.remote_ids(d["remote_id"], outcome.remote_id), now, d["id"]))
        conn.execute(Q["set_notification_status"], ("delivered", now, d["notification_id"]))
        if mode != d["mode"]:
            # Sent across a mode change (in flight, so the rerouter left it): it reached someone,
            # so its old mode's later steps stop, as supersede_stale_escalations stops them.
            conn.execute(Q["supersede_mode_of"], (now, d["notification_id"], d["mode"]))
        return
    if outcome.remote_id is not None:  # reached some of its targets before it failed
        conn.execute(Q["keep_remote_id"], (codec.remote_ids(d["remote_id"], outcome.remote_id), d["id"]))
    if outcome.kind == "retry":
        assert outcome.retry_at is not None, "a retry needs a time"
        n = conn.execute(Q["notification_by_id"], (d["notification_id"],)).fetchone()
        # taken on while this send was in flight, or email came back after another step reached someone
        if codec.stale_step(n, d["mode"], mode):
            conn.execute(Q["supersede_delivery"], (outcome.detail, now, d["id"]))
        else:
            conn.execute(Q["mark_retry"], (codec.ts(outcome.retry_at), outcome.detail, now, d["id"]))
    else:
        conn.execute(Q["mark_failed"], (outcome.detail, now, d["id"]))
        _next_step(conn, d, now)
