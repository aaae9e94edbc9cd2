"""The store's writes, each a function of a connection run inside the writer's transaction."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from daemon.core.health import HealthSnapshot, Transition
from daemon.core.model import RESOLVES_LABEL, SUPERSEDES_LABEL, Mode, Notification, Plan, ProviderState
from daemon.store import codec, episodes
from daemon.store.base import (
    Accepted,
    AckResult,
    Callback,
    CancelResult,
    Claimed,
    KeyReused,
    NewNotification,
    Outcome,
    StoreError,
    refused,
)
from daemon.store.queries import load
from daemon.store.unreadable import decode_each

Q = load("sqlite")
#: delivery states no outcome changes any more
SETTLED = frozenset({"delivered", "failed", "superseded"})


def current_mode(conn: sqlite3.Connection) -> Mode:
    mode: Mode = conn.execute(Q["current_mode"]).fetchone()[0]
    return mode


def accept(
    conn: sqlite3.Connection,
    items: Sequence[NewNotification],
    now: datetime,
    mode: Mode | None = None,
    rows: Sequence[dict[str, Any]] | None = None,
) -> list[Accepted]:
    """Insert each notification with the plan of the mode in force now; repeats return the first.

    ``mode``: the mode in force, read in this transaction (several accepts in one read it once).
    ``rows``: each item's :func:`codec.notification_params`, made before the transaction so that
    the write lock, which every process writing to the store shares, is held for less.

    Raises :class:`KeyReused` before writing anything if an item reuses a key with another digest.
    """
    # The keys' rows, when the reuse check has read them already: each key is looked up once.
    stored = _refuse_reused_keys(conn, items) if any(item.digest is not None for item in items) else None
    mode = current_mode(conn) if mode is None else mode
    # the state only matters to a route with actions of its own for an overlay state
    overridden = any(item.overrides for item in items)
    state = ProviderState(conn.execute(Q["current_state"]).fetchone()[0]) if overridden else None
    results = []
    for i, item in enumerate(items):
        notification, existing_id = item.notification, None
        if (first := episodes.resolves(item)) is not None:
            existing_id, notification = _resolution(conn, notification, first)
        else:
            key = notification.idempotency_key
            if stored is not None:  # a call whose client chose its keys: never re-keyed
                existing_id = stored.get(key)
            elif (existing := conn.execute(Q["find_by_key"], (key,)).fetchone()) is not None:
                existing_id = existing[0]
                if episodes.may_recur(item):
                    existing_id, episode = _firing_episode(conn, notification, existing)
                    if existing_id is None:  # its latest episode is over: this one fires again
                        notification = episodes.firing(notification, episode)
        if existing_id is not None:
            results.append(Accepted(id=existing_id, duplicate=True))
            continue
        rekeyed = notification is not item.notification
        plan = item.plan_in(mode, state)
        if (lineage := notification.labels.get(SUPERSEDES_LABEL)) is not None:
            latest = _group_version(conn.execute(Q["latest_group_version"], (lineage,)).fetchone())
            if latest is not None and codec.repeats(notification, latest):
                results.append(Accepted(id=latest.id, duplicate=True))
                continue
            notification, plan = codec.next_version(notification, plan, latest)
            params = codec.notification_params(notification)
        else:
            params = codec.notification_params(notification) if rows is None or rekeyed else dict(rows[i])
        params["status"] = "held" if plan.defer else "pending"
        params["route"] = plan.route
        params["mode"] = mode
        params["now"] = codec.ts(now)
        params["ack_code"] = None if plan.escalation is None else _fresh_ack_code(conn)
        params["pinned"] = codec.pinned_json(item.plans) if item.pinned else None
        params["request_digest"] = item.digest
        params.update(codec.plan_columns(plan))
        conn.execute(Q["insert_notification"], params)
        _insert_deliveries(conn, notification.id, plan, now)
        if (resolves := notification.labels.get(RESOLVES_LABEL)) is not None:
            _close_resolved(conn, resolves, notification.source, now)
        if lineage is not None:
            _supersede_versions(conn, lineage, notification.id, notification.source, now)
        if stored is not None:
            stored[notification.idempotency_key] = notification.id
        results.append(Accepted(id=notification.id, duplicate=False))
    return results


def _latest(
    conn: sqlite3.Connection, first: str, row: sqlite3.Row | None = None
) -> tuple[int, sqlite3.Row | None]:
    """The latest episode stored of what was first stored under ``first`` (``row``, if read
    already): its number and row (``0, None``: none is)."""
    row = conn.execute(Q["find_by_key"], (first,)).fetchone() if row is None else row
    episode = 0 if row is None else 1
    while row is not None and (
        later := conn.execute(Q["find_by_key"], (episodes.key(first, episode + 1),)).fetchone()
    ):
        episode, row = episode + 1, later
    return episode, row


def _after(row: sqlite3.Row, other: sqlite3.Row) -> bool:
    """Whether ``row`` was stored after ``other``: the store's order (``group_versions_after``'s)."""
    return bool((row["created_at"], row["id"]) > (other["created_at"], other["id"]))


def _firing_episode(
    conn: sqlite3.Connection, notification: Notification, stored: sqlite3.Row
) -> tuple[str | None, int]:
    """For a firing whose key is stored (``stored``, its row): the id and number of the latest
    episode, which it repeats while that one is open; or ``None`` and the number of the next, the
    latest being over."""
    first = notification.idempotency_key
    episode, row = _latest(conn, first, stored)
    assert row is not None, "the key is stored"
    if SUPERSEDES_LABEL in notification.labels:
        # its group's resolution is a version of the group, whatever key it resolves
        later = conn.execute(Q["group_versions_after"], (row["id"],)).fetchall()
        over = any(episodes.ends(json.loads(labels)) for _, labels in later)
    else:
        _, end = _latest(conn, episodes.resolution_of(first))
        over = end is not None and _after(end, row)
    return (None, episode + 1) if over else (row["id"], episode)


def _resolution(
    conn: sqlite3.Connection, notification: Notification, first: str
) -> tuple[str | None, Notification]:
    """For a resolution of the firing first stored under ``first``: the id of the stored
    resolution it repeats, or ``None`` and the resolution keyed for the episode it ends."""
    fired, firing = _latest(conn, first)
    ended, end = _latest(conn, notification.idempotency_key)
    if end is not None:
        if (lineage := notification.labels.get(SUPERSEDES_LABEL)) is not None:
            latest = conn.execute(Q["latest_group_version"], (lineage,)).fetchone()
            again = latest is not None and not episodes.ends(json.loads(latest["labels"]))
        else:
            again = firing is not None and _after(firing, end)
        if not again:  # nothing fired since: a re-send of the latest resolution
            return end["id"], notification
    return None, episodes.resolving(notification, ended + 1, fired)


def _refuse_reused_keys(conn: sqlite3.Connection, items: Sequence[NewNotification]) -> dict[str, str]:
    """Raise :class:`KeyReused` if an item's key was first used, in the store or earlier in
    ``items``, with another request digest. Called before the accept writes anything, so that the
    refusal leaves the accepts sharing the transaction as they were. Returns the id stored under
    each of the keys the store has."""
    first: dict[str, tuple[str, str | None]] = {}  # each key's first notification: id, digest
    stored: dict[str, str] = {}
    for index, item in enumerate(items):
        key = item.notification.idempotency_key
        if key not in first:
            row = conn.execute(Q["find_by_key"], (key,)).fetchone()
            if row is None:
                first[key] = (item.notification.id, item.digest)
            else:
                first[key], stored[key] = (row[0], row[1]), row[0]
        first_id, first_digest = first[key]
        if refused(key, first_id, first_digest, item.digest):
            raise KeyReused(key, first_id, index)
    return stored


def _close_resolved(conn: sqlite3.Connection, key: str, source: str, now: datetime) -> None:
    """A resolution acknowledges what it resolves (``via: resolution``): its steps not yet sent are
    superseded, and a send in flight that then fails is neither retried nor followed by a next
    step, as after any acknowledgement."""
    target = conn.execute(Q["find_by_key"], (key,)).fetchone()
    if target is not None:
        acknowledge(conn, target[0], source, codec.RESOLUTION, now)


def _group_version(row: sqlite3.Row | None) -> codec.GroupVersion | None:
    if row is None:
        return None
    labels = json.loads(row["labels"])
    return codec.GroupVersion(
        row["id"], row["idempotency_key"], labels, row["acknowledged_by"], row["acknowledged_via"]
    )


def _supersede_versions(
    conn: sqlite3.Connection, lineage: str, new_id: str, source: str, now: datetime
) -> None:
    """A new version of an alert group closes the group's versions still open (``via: group
    update``, as a resolution closes what it resolves) and joins the group (what it takes of the
    group's latest version before its insert: :func:`codec.next_version`)."""
    for (older,) in conn.execute(Q["open_group_versions"], (lineage,)).fetchall():
        acknowledge(conn, older, source, codec.GROUP_UPDATE, now)
    conn.execute(Q["insert_group_version"], (lineage, new_id))


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
        if n["acknowledged_at"] is not None:  # taken on while this send was in flight
            conn.execute(Q["supersede_delivery"], (outcome.detail, now, d["id"]))
        else:
            conn.execute(Q["mark_retry"], (codec.ts(outcome.retry_at), outcome.detail, now, d["id"]))
    else:
        conn.execute(Q["mark_failed"], (outcome.detail, now, d["id"]))
        _next_step(conn, d, now)


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


def reroute(
    conn: sqlite3.Connection, mode: Mode, plans: Mapping[str, Plan], now: datetime, *, force: bool = False
) -> int:
    """Give unsent notifications the plan of ``mode``; anything in flight is left to finish.

    Only notifications planned for another mode move, unless ``force`` (a reloaded policy).
    """
    if current_mode(conn) != mode:
        return 0
    moved = 0
    for notification_id, plan in plans.items():
        row = conn.execute(Q["reroute_check"], (notification_id,)).fetchone()
        if row is None or row[0] not in ("pending", "held") or (row[1] == mode and not force) or row[2]:
            continue
        _replan(conn, notification_id, plan, mode, now)
        moved += 1
    return moved


def repin(conn: sqlite3.Connection, mode: Mode, now: datetime, limit: int) -> int:
    """Give up to ``limit`` unsent pinned notifications of another mode their own plan for ``mode``."""
    if current_mode(conn) != mode:
        return 0
    rows = conn.execute(Q["repin_candidates"], (mode, limit)).fetchall()
    plans, _ = decode_each(rows, lambda r: (r["id"], codec.plan(r), codec.pinned_plan(r["pinned"], mode)))
    for notification_id, current, plan in plans:  # an unreadable row stays as it is (logged)
        if replace(current, mode=mode) == plan:  # a drill's one channel in both modes
            _carry_over(conn, notification_id, mode, now)
        else:
            _replan(conn, notification_id, plan, mode, now)
    return len(plans)


def _carry_over(conn: sqlite3.Connection, notification_id: str, mode: Mode, now: datetime) -> None:
    """The same plan in ``mode``: its pending deliveries move with their attempts and backoff."""
    at = codec.ts(now)
    conn.execute(Q["carry_over_notification"], (mode, at, notification_id))
    conn.execute(Q["carry_over_deliveries"], (mode, at, notification_id))


def _replan(conn: sqlite3.Connection, notification_id: str, plan: Plan, mode: Mode, now: datetime) -> None:
    """Supersede what the notification still had to send and give it ``plan`` from its first step."""
    at = codec.ts(now)
    conn.execute(Q["supersede_pending"], (at, notification_id))
    status = "held" if plan.defer else "pending"
    columns = codec.plan_columns(plan)
    conn.execute(
        Q["replan"], (status, plan.route, mode, columns["plan"], columns["escalation"], at, notification_id)
    )
    if plan.escalation is not None:
        conn.execute(Q["give_ack_code"], (_fresh_ack_code(conn), notification_id))
    _insert_deliveries(conn, notification_id, plan, now)


def save_provider(
    conn: sqlite3.Connection, snapshot: HealthSnapshot, transition: Transition | None, now: datetime
) -> None:
    state = snapshot.state
    if current_mode(conn) != snapshot.mode:
        conn.execute(Q["supersede_stale_escalations"], {"now": codec.ts(now), "mode": snapshot.mode})
    conn.execute(
        Q["save_provider"], (state.value, snapshot.mode, codec.snapshot_json(snapshot), codec.ts(now))
    )
    if transition is not None:
        conn.execute(
            Q["insert_event"],
            (
                codec.ts(transition.at),
                transition.from_state.value,
                transition.to_state.value,
                transition.cause,
            ),
        )


def cancel(conn: sqlite3.Connection, notification_id: str, now: datetime) -> CancelResult:
    """Stop a notification that is not being sent right now; what was sent stays sent."""
    row = conn.execute(Q["reroute_check"], (notification_id,)).fetchone()
    if row is None:
        return "not_found"
    if row[0] not in ("pending", "held"):
        return "finished"
    if row[2]:
        return "in_flight"
    at = codec.ts(now)
    conn.execute(Q["supersede_pending"], (at, notification_id))
    conn.execute(Q["cancel_notification"], (at, notification_id))
    return "cancelled"


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
