"""The PostgreSQL store's reads, each a coroutine of one connection (so a view is read whole)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg.rows import DictRow

from daemon.core.health import Transition
from daemon.core.model import CheckResult, Mode, Notification, Plan, ProviderState, other_mode
from daemon.store import codec, unreadable
from daemon.store.postgres_queries import Conn, Q, epochs
from daemon.store.values import AttemptView, ChannelHealth, NotificationView, ProviderView, QueueView


async def rows(conn: Conn, query: str, params: Sequence[object] = ()) -> list[DictRow]:
    return await (await conn.execute(Q[query], params)).fetchall()


async def due(conn: Conn) -> dict[str, datetime]:
    """Per channel, when its earliest pending delivery (of the mode in force) is due."""
    return {row["channel"]: row["due_at"].astimezone(UTC) for row in await rows(conn, "due")}


async def acknowledged(conn: Conn, notification_ids: Sequence[str]) -> set[str]:
    return {row["id"] for row in await rows(conn, "acknowledged_among", (list(notification_ids),))}


async def reroute_candidates(
    conn: Conn, mode: Mode, limit: int, after_id: str = ""
) -> tuple[list[Notification], int]:
    """The candidates it could decode (:mod:`daemon.store.unreadable`), and how many rows it got."""
    found = await rows(conn, "reroute_candidates", (other_mode(mode), after_id, limit))
    return unreadable.decode_each(found, lambda r: codec.notification(epochs(r)))[0], len(found)


async def unsent(conn: Conn, after_id: str, limit: int) -> tuple[list[tuple[Notification, Plan]], int]:
    """The page's notifications it could decode, with their plans, and how many rows it got."""
    found = await rows(conn, "unsent", (after_id, limit))
    page, _ = unreadable.decode_each(found, lambda r: (codec.notification(epochs(r)), codec.plan(r)))
    return page, len(found)


async def provider(conn: Conn, events: int, checks: int) -> ProviderView:
    (row,) = await rows(conn, "provider")
    return ProviderView(
        state=ProviderState(row["state"]),
        mode=row["mode"],
        snapshot=codec.snapshot(row["snapshot"]),
        events=tuple(codec.transition(epochs(r)) for r in await rows(conn, "recent_events", (events,))),
        checks=tuple(codec.check_result(epochs(r)) for r in await rows(conn, "recent_checks", (checks,))),
    )


async def history(conn: Conn, since: datetime) -> tuple[list[Transition], list[CheckResult]]:
    """Transitions and check results since ``since``, oldest first (the status page's timeline)."""
    events = [codec.transition(epochs(r)) for r in await rows(conn, "events_since", (since,))]
    return events, [codec.check_result(epochs(r)) for r in await rows(conn, "checks_since", (since,))]


async def queue(conn: Conn) -> QueueView:
    (oldest,) = await rows(conn, "oldest_pending")
    return QueueView(
        notifications={r["status"]: r["n"] for r in await rows(conn, "notification_counts")},
        deliveries={r["state"]: r["n"] for r in await rows(conn, "delivery_counts")},
        oldest_pending_at=_utc(oldest["at"]),
    )


async def channel_health(conn: Conn) -> list[ChannelHealth]:
    return [_health(row) for row in await rows(conn, "channel_health")]


async def latest_drill(conn: Conn) -> str | None:
    found = await rows(conn, "latest_drill")
    return None if not found else str(found[0]["drill"])


async def notifications(
    conn: Conn, query: str, params: Sequence[object] | Mapping[str, object]
) -> tuple[list[NotificationView], int]:
    """The views of the notifications whose ids ``query`` selects, in its order, but for those that
    cannot be decoded (:mod:`daemon.store.unreadable`), and how many ids it got."""
    ids = [row["id"] for row in await (await conn.execute(Q[query], params)).fetchall()]
    views = []
    for nid in ids:
        try:
            view = await notification(conn, nid)
        except psycopg.Error:
            raise
        except Exception as exc:  # whatever the row holds, the list goes on without it
            unreadable.left_out(nid, unreadable.reason(exc))
            continue
        if view is not None:
            views.append(view)
    return views, len(ids)


async def notification(conn: Conn, notification_id: str) -> NotificationView | None:
    found = await rows(conn, "notification_by_id", (notification_id,))
    if not found:
        return None
    row = found[0]
    return NotificationView(
        notification=codec.notification(epochs(row)),
        status=row["status"],
        route=row["route"],
        mode=row["mode"],
        plan=tuple(json.loads(row["plan"])),
        deliveries=tuple(
            codec.delivery(epochs(d)) for d in await rows(conn, "deliveries_of", (notification_id,))
        ),
        attempts=tuple(_attempt(a) for a in await rows(conn, "attempts_of", (notification_id,))),
    )


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _health(row: DictRow) -> ChannelHealth:
    return ChannelHealth(
        channel=row["channel"],
        last_success_at=_utc(row["last_success_at"]),
        last_failure_at=_utc(row["last_failure_at"]),
        last_error=row["last_error"],
        consecutive_failures=row["consecutive_failures"],
    )


def _attempt(row: DictRow) -> AttemptView:
    return AttemptView(
        delivery_id=row["delivery_id"],
        channel=row["channel"],
        attempt=row["attempt"],
        started_at=row["started_at"].astimezone(UTC),
        finished_at=row["finished_at"].astimezone(UTC),
        outcome=row["outcome"],
        detail=row["detail"],
    )


@dataclass(frozen=True, slots=True)
class LeaderView:
    """The lease row as the database sees it now (``db_now`` is its clock)."""

    node: str | None
    version: int
    expires_at: datetime
    db_now: datetime

    @property
    def held(self) -> bool:
        return self.node is not None and self.expires_at > self.db_now


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as ``backchannel status`` shows it: its role and its latest result per check."""

    node: str
    role: str  # leader | follower
    checks: tuple[CheckResult, ...]


async def leader(conn: Conn) -> LeaderView:
    (row,) = await rows(conn, "leader")
    return LeaderView(
        node=row["node"],
        version=row["version"],
        expires_at=row["expires_at"].astimezone(UTC),
        db_now=row["db_now"].astimezone(UTC),
    )


async def nodes(conn: Conn, since: datetime) -> list[NodeView]:
    """Every node that reported a check since ``since``, and the leader even if it did not."""
    lead = await leader(conn)
    by_node: dict[str, list[CheckResult]] = {}
    for row in await rows(conn, "node_checks", (since,)):
        by_node.setdefault(row["node"], []).append(codec.check_result(epochs(row)))
    if lead.held and lead.node is not None:
        by_node.setdefault(lead.node, [])
    return [
        NodeView(node, "leader" if lead.held and node == lead.node else "follower", tuple(checks))
        for node, checks in sorted(by_node.items())
    ]
