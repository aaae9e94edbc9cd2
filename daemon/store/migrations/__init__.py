"""Versioned schema migrations: ``NNNN_name.sql`` files per dialect, applied in order, once each.

``sqlite/`` and ``postgres/`` number their scripts from one sequence, so a version means the same
change in both; a change one dialect does not need has no script there (version 3, leadership, is
PostgreSQL's alone). Both stores apply what is missing when they open; ``backchannel migrate`` does the same
without starting anything (:func:`migrate_sqlite`, :meth:`PostgresStore.migrate`). A database
migrated by a newer release than this one is refused rather than written with an older idea
of its schema.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from daemon.store.base import StoreError, StoreUnavailable

if TYPE_CHECKING:  # psycopg is imported where PostgreSQL is used, not by every SQLite start-up
    from psycopg import AsyncConnection

Dialect = Literal["sqlite", "postgres"]

_FILE = re.compile(r"^(\d{4})_\w+\.sql$")

#: one cluster-wide advisory lock, held for the migrating transaction only, so nodes starting
#: together apply each script once (the lock and the DDL commit or vanish together)
PG_MIGRATION_LOCK = 0x6263_6D69  # "bcmi"
#: how long a migration waits for a lock (milliseconds). In a rolling upgrade the nodes still
#: running hold locks on the tables a migration alters, and a migration waiting in the lock queue
#: makes every later query on that table wait behind it: every node's intake and delivery would
#: stop for as long as one long transaction ran. Past this the migration gives up (nothing is
#: applied) and says so; the starting node exits and its service manager starts it again.
PG_LOCK_TIMEOUT_MS = 10_000


class SchemaTooNew(StoreError):
    """The database was migrated by a newer backchannel; upgrade this one."""


class MigrationBlocked(StoreUnavailable):
    """A PostgreSQL migration gave up waiting for a lock another session holds; nothing applied."""


def scripts(dialect: Dialect) -> list[tuple[int, str]]:
    folder = resources.files(__package__).joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _pending(dialect: Dialect, done: set[int]) -> list[tuple[int, str]]:
    known = scripts(dialect)
    newest = max((v for v, _ in known), default=0)
    if done and max(done) > newest:
        raise SchemaTooNew(f"the database schema is at version {max(done)}; this release knows {newest}")
    return [(version, script) for version, script in known if version not in done]


def apply(conn: sqlite3.Connection, dialect: Literal["sqlite"] = "sqlite") -> list[int]:
    """Apply every SQLite migration not yet applied; returns the versions applied now."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    applied = []
    for version, script in _pending(dialect, done):
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


def create_private(path: Path) -> None:
    """Create the store file, readable by its owner alone, unless it exists (it keeps its mode).

    SQLite creates it with the process's umask (0644 for a daemon run by hand, where the unit's
    UMask=0077 does not apply), and its ``-wal`` and ``-shm`` files take its mode: every local user
    could read every notification.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def migrate_sqlite(path: Path) -> list[int]:
    """``backchannel migrate`` for an embedded store: apply what is missing, then close."""
    create_private(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return apply(conn)
    finally:
        conn.close()


async def apply_postgres(conn: AsyncConnection[Any]) -> list[int]:
    """Apply every PostgreSQL migration not yet applied, all in one transaction (none if a lock it
    needs is not free within PG_LOCK_TIMEOUT_MS: :class:`MigrationBlocked`)."""
    from psycopg import errors

    try:
        return await _apply_postgres(conn)
    except errors.LockNotAvailable as exc:
        raise MigrationBlocked(
            f"a migration waited {PG_LOCK_TIMEOUT_MS / 1000:g} s for a lock another session holds"
            " (a node still running the previous release, or a long transaction) and gave up;"
            " nothing was applied: start again, or stop the older nodes first"
        ) from exc


async def _apply_postgres(conn: AsyncConnection[Any]) -> list[int]:
    from psycopg.rows import tuple_row

    async with conn.transaction():
        # Another node's migration first, however long it runs: waiting for this lock holds up no
        # table (only the nodes starting), and giving up would only start the wait again.
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_MIGRATION_LOCK,))
        # then the tables' locks, bounded; the transaction's own setting: the pool's connections
        # keep theirs
        await conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{PG_LOCK_TIMEOUT_MS}ms",))
        async with conn.cursor(row_factory=tuple_row) as cur:
            # only when missing: CREATE ... IF NOT EXISTS still needs the CREATE privilege, which a
            # daemon running with data privileges only (after `backchannel migrate`) lacks
            await cur.execute("SELECT to_regclass('schema_migrations') IS NULL")
            if (await cur.fetchone()) == (True,):
                await cur.execute(
                    "CREATE TABLE schema_migrations"
                    " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
            await cur.execute("SELECT version FROM schema_migrations")
            done = {version for (version,) in await cur.fetchall()}
        applied = []
        for version, script in _pending("postgres", done):
            # no parameters: psycopg sends the script as one simple query, several statements allowed
            await conn.execute(script.encode())
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
    return applied
