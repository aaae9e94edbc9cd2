"""The SQLite store's provider row: the mode in force read, and the provider's state saved (a mode
change supersedes the other mode's escalation steps), each inside the writer's transaction."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from daemon.core.health import HealthSnapshot, Transition
from daemon.core.model import Mode
from daemon.store import codec
from daemon.store.queries import load

Q = load("sqlite")


def current_mode(conn: sqlite3.Connection) -> Mode:
    mode: Mode = conn.execute(Q["current_mode"]).fetchone()[0]
    return mode


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
