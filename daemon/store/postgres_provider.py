"""The PostgreSQL store's provider row: the provider's state saved, plain or fenced by the leader's
token (the lease version), a mode change superseding the other mode's escalation steps; in the
lock order of :mod:`daemon.store.postgres_queries`. The same as :mod:`daemon.store.sqlite_provider`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from daemon.core.health import HealthSnapshot, Transition
from daemon.core.model import Mode
from daemon.store import codec
from daemon.store.base import NotLeader
from daemon.store.postgres_queries import Conn, Q, _one


@dataclass(frozen=True, slots=True)
class Fence:
    """The leader's name and token (the lease version) its provider writes carry."""

    node: str
    version: int


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
