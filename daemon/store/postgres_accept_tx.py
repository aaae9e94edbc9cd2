"""The PostgreSQL store's accept, in the caller's transaction: the same as
:mod:`daemon.store.sqlite_accept_tx`, with the locks several nodes need (the mode read ``FOR SHARE``,
an alert group's lock, keys inserted in one order) and the new work announced.

The batching of accepts into one transaction is in :mod:`daemon.store.postgres_accepts`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from psycopg.rows import DictRow

from daemon.core.model import RESOLVES_LABEL, SUPERSEDES_LABEL, Mode, Notification, ProviderState
from daemon.store import codec, episodes, group_versions
from daemon.store.base import AcceptResult, KeyReused, refused
from daemon.store.postgres_ack import acknowledge
from daemon.store.postgres_queries import WORK_CHANNEL, Conn, Q, _one
from daemon.store.postgres_steps import _fresh_ack_code, _insert_deliveries
from daemon.store.values import Accepted, NewNotification


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
            version = group_versions.GroupVersion(
                latest["id"],
                latest["idempotency_key"],
                json.loads(latest["labels"]),
                latest["acknowledged_by"],
                latest["acknowledged_via"],
            )
            if group_versions.repeats(notification, version):
                return Accepted(id=version.id, duplicate=True), False
            notification, plan = group_versions.next_version(notification, plan, version)
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
