"""The PostgreSQL store's writes, each a coroutine of a connection inside the caller's transaction.

The same steps as :mod:`daemon.store.transactions`, with the row locks several nodes need:
the mode is read ``FOR SHARE``; claims take rows ``FOR UPDATE SKIP LOCKED`` under a lease;
one lock order, so no deadlocks: the provider row (accept, record, reroute share it; save_provider
locks it), then a notification, then its deliveries.

The steps of a plan (its deliveries inserted, moved on after a failure) are in
:mod:`daemon.store.postgres_steps`; the named queries and the connection type in
:mod:`daemon.store.postgres_queries`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from psycopg.rows import DictRow

from daemon.core.health import HealthSnapshot, Transition
from daemon.core.model import RESOLVES_LABEL, SUPERSEDES_LABEL, Mode, Notification, Plan, ProviderState
from daemon.store import codec, episodes
from daemon.store.base import (
    Accepted,
    AcceptResult,
    CancelResult,
    Claimed,
    KeyReused,
    NewNotification,
    Outcome,
    refused,
)
from daemon.store.base import NotLeader as NotLeader  # kept importable from here
from daemon.store.postgres_ack import acknowledge
from daemon.store.postgres_queries import WORK_CHANNEL, Conn, Q, _one, epochs
from daemon.store.postgres_steps import _fresh_ack_code, _insert_deliveries, _next_step
from daemon.store.unreadable import decode_each


@dataclass(frozen=True, slots=True)
class Fence:
    """The leader's name and token (the lease version) its provider writes carry."""

    node: str
    version: int


async def accept(
    conn: Conn, calls: Sequence[tuple[Sequence[NewNotification], datetime]], node: str
) -> list[AcceptResult]:
    """Insert each call's notifications with the plan of the mode in force; repeats return the first.

    A call reusing a key its client chose with another request (:class:`KeyReused`) is refused
    before anything is written, the others go on; one whose key another transaction commits
    meanwhile raises it from the insert, and the whole transaction rolls back (the caller runs
    each call alone then).
    """
    row = await _one(conn, Q["current_mode_shared"], ())
    assert row is not None, "the provider row is created by the first migration"
    mode: Mode = row["mode"]
    state = ProviderState(row["state"])
    refused: dict[int, KeyReused] = {}
    for c, (items, _) in enumerate(calls):
        if any(item.digest is not None for item in items) and (why := await _reused_key(conn, items)):
            refused[c] = why
    answers: dict[tuple[int, int], Accepted] = {}
    # Key order: transactions inserting the same keys wait for each other in one order, never in a cycle.
    order = sorted(
        ((c, i) for c, (items, _) in enumerate(calls) if c not in refused for i in range(len(items))),
        key=lambda ci: calls[ci[0]][0][ci[1]].notification.idempotency_key,
    )
    announced = False
    for c, i in order:
        items, now = calls[c]
        answers[c, i], delivered = await _accept_one(conn, items[i], mode, state, now, i)
        if delivered and not announced:
            await conn.execute(Q["notify_work"], (WORK_CHANNEL, node))
            announced = True
    return [
        refused[c] if c in refused else [answers[c, i] for i in range(len(items))]
        for c, (items, _) in enumerate(calls)
    ]


async def _reused_key(conn: Conn, items: Sequence[NewNotification]) -> KeyReused | None:
    """The refusal of the first item whose key was first used, in the store or earlier in
    ``items``, with another request digest (as the SQLite store's ``_refuse_reused_keys``)."""
    keys = list({item.notification.idempotency_key for item in items})
    found = await (await conn.execute(Q["find_by_keys"], (keys,))).fetchall()
    first = {row["idempotency_key"]: (row["id"], row["request_digest"]) for row in found}
    for index, item in enumerate(items):
        key = item.notification.idempotency_key
        first_id, first_digest = first.setdefault(key, (item.notification.id, item.digest))
        if refused(key, first_id, first_digest, item.digest):
            return KeyReused(key, first_id, index)
    return None


async def _accept_one(
    conn: Conn, item: NewNotification, mode: Mode, state: ProviderState, now: datetime, index: int
) -> tuple[Accepted, bool]:
    """``index``: the item's place in its call (:class:`KeyReused` names it)."""
    plan, notification = item.plan_in(mode, state), item.notification
    if (lineage := notification.labels.get(SUPERSEDES_LABEL)) is not None:
        # One version of a group commits at a time: two at once would each miss the other.
        await conn.execute(Q["lock_group"], (lineage,))
    if (first := episodes.resolves(item)) is not None:
        found, notification = await _resolution(conn, notification, first)
        if found is not None:
            return Accepted(id=found, duplicate=True), False
    if lineage is not None:
        latest = await _one(conn, Q["latest_group_version"], (lineage,))
        if latest is not None:
            version = codec.GroupVersion(
                latest["id"],
                latest["idempotency_key"],
                json.loads(latest["labels"]),
                latest["acknowledged_by"],
                latest["acknowledged_via"],
            )
            if codec.repeats(notification, version):
                return Accepted(id=version.id, duplicate=True), False
            notification, plan = codec.next_version(notification, plan, version)
    params = (
        codec.notification_params(notification)
        | {
            "created_at": notification.created_at,
            "status": "held" if plan.defer else "pending",
            "route": plan.route,
            "mode": mode,
            "now": now,
            "ack_code": None if plan.escalation is None else await _fresh_ack_code(conn),
            "pinned": codec.pinned_json(item.plans) if item.pinned else None,
            "request_digest": item.digest,
        }
        | codec.plan_columns(plan)
    )
    if await _one(conn, Q["insert_notification"], params) is None:
        existing = await _one(conn, Q["find_by_key"], (notification.idempotency_key,))
        assert existing is not None, "ON CONFLICT found the key, so it is there"
        if refused(notification.idempotency_key, existing["id"], existing["request_digest"], item.digest):
            # The transaction rolls back; the accepts that shared it run again without this one.
            raise KeyReused(notification.idempotency_key, existing["id"], index)
        if not episodes.may_recur(item):
            return Accepted(id=existing["id"], duplicate=True), False
        found, episode = await _firing_episode(conn, notification, existing)
        if found is not None:
            return Accepted(id=found, duplicate=True), False
        # its latest episode is over: this one fires again (two at once: the second finds the first's key)
        notification = episodes.firing(notification, episode)
        params["idempotency_key"] = notification.idempotency_key
        if await _one(conn, Q["insert_notification"], params) is None:
            again = await _one(conn, Q["find_by_key"], (notification.idempotency_key,))
            assert again is not None, "ON CONFLICT found the key, so it is there"
            return Accepted(id=again["id"], duplicate=True), False
    await _insert_deliveries(conn, notification.id, plan, now)
    if (resolves := notification.labels.get(RESOLVES_LABEL)) is not None:
        await _close_resolved(conn, resolves, notification.source, now)
    if lineage is not None:
        await _supersede_versions(conn, lineage, notification.id, notification.source, now)
    return Accepted(id=notification.id, duplicate=False), not plan.defer


async def _latest(conn: Conn, first: str, row: DictRow | None = None) -> tuple[int, DictRow | None]:
    """The latest episode stored of what was first stored under ``first`` (``row``, if read
    already): its number and row (``0, None``: none is)."""
    row = await _one(conn, Q["find_by_key"], (first,)) if row is None else row
    episode = 0 if row is None else 1
    while row is not None and (
        later := await _one(conn, Q["find_by_key"], (episodes.key(first, episode + 1),))
    ):
        episode, row = episode + 1, later
    return episode, row


def _after(row: DictRow, other: DictRow) -> bool:
    """Whether ``row`` was stored after ``other``: the store's order (``group_versions_after``'s)."""
    return bool((row["created_at"], row["id"]) > (other["created_at"], other["id"]))


async def _firing_episode(conn: Conn, notification: Notification, stored: DictRow) -> tuple[str | None, int]:
    """For a firing whose key is stored (``stored``, its row): the latest episode's id and number,
    or ``None`` and the next one's number (see the SQLite store's ``_firing_episode``)."""
    first = notification.idempotency_key
    episode, row = await _latest(conn, first, stored)
    assert row is not None, "the key is stored"
    if SUPERSEDES_LABEL in notification.labels:
        later = await (await conn.execute(Q["group_versions_after"], (row["id"],))).fetchall()
        over = any(episodes.ends(json.loads(version["labels"])) for version in later)
    else:
        _, end = await _latest(conn, episodes.resolution_of(first))
        over = end is not None and _after(end, row)
    return (None, episode + 1) if over else (row["id"], episode)


async def _resolution(conn: Conn, notification: Notification, first: str) -> tuple[str | None, Notification]:
    """For a resolution: the stored resolution it repeats, or ``None`` and the resolution keyed
    for the episode it ends (see the SQLite store's ``_resolution``); its group locked."""
    fired, firing = await _latest(conn, first)
    ended, end = await _latest(conn, notification.idempotency_key)
    if end is not None:
        if (lineage := notification.labels.get(SUPERSEDES_LABEL)) is not None:
            latest = await _one(conn, Q["latest_group_version"], (lineage,))
            again = latest is not None and not episodes.ends(json.loads(latest["labels"]))
        else:
            again = firing is not None and _after(firing, end)
        if not again:
            return end["id"], notification
    return None, episodes.resolving(notification, ended + 1, fired)


async def _close_resolved(conn: Conn, key: str, source: str, now: datetime) -> None:
    """A resolution acknowledges what it resolves (see the SQLite store's ``_close_resolved``);
    the acknowledgement locks the notification and its deliveries before it supersedes any."""
    target = await _one(conn, Q["find_by_key"], (key,))
    if target is not None:
        await acknowledge(conn, target["id"], source, codec.RESOLUTION, now)


async def _supersede_versions(conn: Conn, lineage: str, new_id: str, source: str, now: datetime) -> None:
    """A new version of an alert group closes the group's versions still open (see the SQLite
    store's ``_supersede_versions``); the caller holds the group's lock."""
    for row in await (await conn.execute(Q["open_group_versions"], (lineage,))).fetchall():
        await acknowledge(conn, row["notification_id"], source, codec.GROUP_UPDATE, now)
    await conn.execute(Q["insert_group_version"], (lineage, new_id))


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
        if n["acknowledged_at"] is not None:  # taken on while this send was in flight
            await conn.execute(Q["supersede_delivery"], (outcome.detail, now, d["id"]))
        else:
            await conn.execute(Q["mark_retry"], (outcome.retry_at, outcome.detail, now, d["id"]))
    else:
        await conn.execute(Q["mark_failed"], (outcome.detail, now, d["id"]))
        await _next_step(conn, n, d, now, node)


async def reroute(
    conn: Conn, mode: Mode, plans: Mapping[str, Plan], now: datetime, node: str, *, force: bool = False
) -> int:
    """Give unsent notifications the plan of ``mode``; anything in flight is left to finish.

    Only notifications planned for another mode move, unless ``force`` (a reloaded policy).
    """
    row = await _one(conn, Q["current_mode_shared"], ())
    if row is None or row["mode"] != mode:
        return 0
    moved = 0
    for notification_id in sorted(plans):
        if await _replan(conn, notification_id, plans[notification_id], mode, now, force=force):
            moved += 1
    if moved:
        await conn.execute(Q["notify_work"], (WORK_CHANNEL, node))
    return moved


async def repin(conn: Conn, mode: Mode, now: datetime, limit: int, node: str) -> int:
    """Give up to ``limit`` unsent pinned notifications of another mode their own plan for ``mode``."""
    row = await _one(conn, Q["current_mode_shared"], ())
    if row is None or row["mode"] != mode:
        return 0
    rows = await (await conn.execute(Q["repin_candidates"], (mode, limit))).fetchall()
    ordered = sorted(rows, key=lambda r: str(r["id"]))  # the lock order reroute keeps
    plans, _ = decode_each(ordered, lambda r: (r["id"], codec.plan(r), codec.pinned_plan(r["pinned"], mode)))
    moved = 0
    for notification_id, current, plan in plans:  # an unreadable row stays as it is (logged)
        if replace(current, mode=mode) == plan:  # a drill's one channel in both modes
            moved += await _carry_over(conn, notification_id, mode, now)
        elif await _replan(conn, notification_id, plan, mode, now, force=False):
            moved += 1
    if moved:
        await conn.execute(Q["notify_work"], (WORK_CHANNEL, node))
    return moved


async def _carry_over(conn: Conn, notification_id: str, mode: Mode, now: datetime) -> bool:
    """The same plan in ``mode``: its pending deliveries move with their attempts and backoff."""
    if not await _movable(conn, notification_id, mode, force=False):
        return False
    await conn.execute(Q["carry_over_notification"], (mode, now, notification_id))
    await conn.execute(Q["carry_over_deliveries"], (mode, now, notification_id))
    return True


async def _movable(conn: Conn, notification_id: str, mode: Mode, *, force: bool) -> bool:
    """Lock the notification and its deliveries; whether it is unsent, of another mode (unless
    ``force``) and has nothing in flight."""
    n = await _one(conn, Q["lock_notification"], (notification_id,))
    if n is None or n["status"] not in ("pending", "held") or (n["mode"] == mode and not force):
        return False
    # Locking the deliveries waits out a claim being committed elsewhere, then sees it in flight.
    states = await (await conn.execute(Q["lock_deliveries_of"], (notification_id,))).fetchall()
    return not any(s["state"] == "in_flight" for s in states)


async def _replan(
    conn: Conn, notification_id: str, plan: Plan, mode: Mode, now: datetime, *, force: bool
) -> bool:
    if not await _movable(conn, notification_id, mode, force=force):
        return False
    await conn.execute(Q["supersede_pending"], (now, notification_id))
    status = "held" if plan.defer else "pending"
    columns = codec.plan_columns(plan)
    await conn.execute(
        Q["replan"], (status, plan.route, mode, columns["plan"], columns["escalation"], now, notification_id)
    )
    if plan.escalation is not None:
        await conn.execute(Q["give_ack_code"], (await _fresh_ack_code(conn), notification_id))
    await _insert_deliveries(conn, notification_id, plan, now)
    return True


async def save_provider(
    conn: Conn, snapshot: HealthSnapshot, transition: Transition | None, now: datetime
) -> None:
    state = snapshot.state
    await _supersede_stale_escalations(conn, snapshot.mode, now)
    await conn.execute(Q["save_provider"], (state.value, snapshot.mode, codec.snapshot_json(snapshot), now))
    if transition is not None:
        await conn.execute(
            Q["insert_event"],
            (transition.at, transition.from_state.value, transition.to_state.value, transition.cause),
        )


async def _supersede_stale_escalations(conn: Conn, mode: Mode, now: datetime) -> None:
    """Escalation steps of the other mode stop once their notification reached someone.

    The provider row is locked first, before the bulk update locks delivery rows (see the module).
    """
    current = await _one(conn, Q["lock_provider"], ())
    if current is not None and current["mode"] != mode:
        await conn.execute(Q["supersede_stale_escalations"], {"now": now, "mode": mode})


async def save_provider_fenced(
    conn: Conn, snapshot: HealthSnapshot, transition: Transition | None, now: datetime, fence: Fence
) -> None:
    """The leader's write: raises NotLeader (rolling back) when its token is no longer current."""
    token = {"node": fence.node, "version": fence.version}
    values = {"state": snapshot.state.value, "mode": snapshot.mode, "snapshot": codec.snapshot_json(snapshot)}
    await _supersede_stale_escalations(conn, snapshot.mode, now)  # rolled back if the fence fails
    cur = await conn.execute(Q["save_provider_fenced"], {**values, "now": now, **token})
    if cur.rowcount != 1:
        raise NotLeader(f"node {fence.node} is no longer the leader (lease version {fence.version})")
    if transition is not None:
        event = {
            "at": transition.at,
            "from_state": transition.from_state.value,
            "to_state": transition.to_state.value,
            "cause": transition.cause,
        }
        cur = await conn.execute(Q["insert_event_fenced"], {**event, **token})
        if cur.rowcount != 1:
            raise NotLeader(f"node {fence.node} lost the lead while recording a transition")


async def cancel(conn: Conn, notification_id: str, now: datetime) -> CancelResult:
    """Stop a notification that is not being sent right now; what was sent stays sent."""
    n = await _one(conn, Q["lock_notification"], (notification_id,))
    if n is None:
        return "not_found"
    if n["status"] not in ("pending", "held"):
        return "finished"
    states = await (await conn.execute(Q["lock_deliveries_of"], (notification_id,))).fetchall()
    if any(s["state"] == "in_flight" for s in states):
        return "in_flight"
    await conn.execute(Q["supersede_pending"], (now, notification_id))
    await conn.execute(Q["cancel_notification"], (now, notification_id))
    return "cancelled"
