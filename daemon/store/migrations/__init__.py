"""Versioned schema migrations: ``NNNN_name.sql`` files per dialect, applied in order, once each."""

from __future__ import annotations

import re
import sqlite3
import time
from importlib import resources

_FILE = re.compile(r"^(\d{4})_\w+\.sql$")


def scripts(dialect: str) -> list[tuple[int, str]]:
    folder = resources.files(__package__).joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


def apply(conn: sqlite3.Connection, dialect: str) -> list[int]:
    """Apply every migration not yet applied; returns the versions applied now."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    applied = []
    for version, script in scripts(dialect):
        if version in done:
            continue
        try:
            conn.executescript("BEGIN IMMEDIATE;\n" + script)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time()))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        applied.append(version)
    return applied
