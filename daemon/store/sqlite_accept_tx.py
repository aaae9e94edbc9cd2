"""The SQLite store's accept, inside the writer's transaction: each notification inserted with the
plan of the mode in force, or found a repeat of one stored (its key, the episode of an alert it
fires or resolves, the version of its alert group), and a key reused with another request refused.

The batching of accepts into one transaction is in :mod:`daemon.store.sqlite_accepts`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from daemon.core.model import RESOLVES_LABEL, SUPERSEDES_LABEL, Mode, Notification, ProviderState
from daemon.store import codec, episodes, group_versions
from daemon.store.base import KeyReused, refused
from daemon.store.queries import load
from daemon.store.sqlite_ack import acknowledge
from daemon.store.sqlite_provider import current_mode
from daemon.store.sqlite_steps import _fresh_ack_code, _insert_deliveries
from daemon.store.values import Accepted, NewNotification

Q = load("sqlite")


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
            if latest is not None and group_versions.repeats(notification, latest):
                results.append(Accepted(id=latest.id, duplicate=True))
                continue
            notification, plan = group_versions.next_version(notification, plan, latest)
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


def _group_version(row: sqlite3.Row | None) -> group_versions.GroupVersion | None:
    if row is None:
        return None
    labels = json.loads(row["labels"])
    return group_versions.GroupVersion(
        row["id"], row["idempotency_key"], labels, row["acknowledged_by"], row["acknowledged_via"]
    )


def _supersede_versions(
    conn: sqlite3.Connection, lineage: str, new_id: str, source: str, now: datetime
) -> None:
    """A new version of an alert group closes the group's versions still open (``via: group
    update``, as a resolution closes what it resolves) and joins the group (what it takes of the
    group's latest version before its insert: :func:`group_versions.next_version`)."""
    for (older,) in conn.execute(Q["open_group_versions"], (lineage,)).fetchall():
        acknowledge(conn, older, source, codec.GROUP_UPDATE, now)
    conn.execute(Q["insert_group_version"], (lineage, new_id))
