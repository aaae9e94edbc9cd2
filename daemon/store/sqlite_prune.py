"""Retention on SQLite: finished notifications past ``store.retention`` deleted, a batch per job.

What is deleted with a notification: its deliveries, their attempts and its alert-group versions.
What is kept, however old: a notification with a delivery still to send or being sent (a held
one, a later escalation step), and anything not finished. See docs/operations.md, "Retention".
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from daemon.store import codec
from daemon.store.queries import load

Q = load("sqlite")
#: children first: attempts name deliveries, deliveries and group versions name notifications
DELETES = ("prune_attempts", "prune_deliveries", "prune_group_versions", "prune_notifications")


def prune(conn: sqlite3.Connection, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` finished notifications last changed before ``before``; how many."""
    rows = conn.execute(Q["prunable"], {"before": codec.ts(before), "limit": limit}).fetchall()
    if not rows:
        return 0
    ids = json.dumps([row[0] for row in rows])
    for name in DELETES:
        conn.execute(Q[name], (ids,))
    return len(rows)
