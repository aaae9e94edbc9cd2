"""Opening a SQLite store the daemon cannot use: refused at open, before the daemon says it is ready."""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import signal
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.store import migrations
from daemon.store.sqlite import SqliteStore

#: the user a root test run drops to, so the file's mode binds it as it binds the service's user
NOBODY = 65534
DEADLINE_S = 60


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory the unprivileged child may use (pytest's own are root's alone under root)."""
    path = Path(tempfile.mkdtemp(prefix="bc-store-open-"))
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    yield path
    shutil.rmtree(path)


def test_a_read_only_store_file_is_refused_at_open(workdir: Path) -> None:
    """A store file the daemon may only read fails open, rather than opening and refusing every accept."""
    path = workdir / "outbox.db"
    migrations.migrate_sqlite(path)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    path.chmod(0o444)
    expected = f"StoreUnavailable: cannot open {path}: attempt to write a readonly database"
    assert _open_unprivileged(path) == expected


def _open_unprivileged(path: Path) -> str:
    """Open and close the store in a child process without root's powers; what it raised, or 'opened'."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            if os.geteuid() == 0:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            message = asyncio.run(_open_and_close(path))
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], DEADLINE_S)
    if not ready:  # a child stuck (a lock some thread held at the fork): fail, never hang the run
        os.kill(pid, signal.SIGKILL)
    with os.fdopen(read_end, "rb") as answer:
        message = answer.read().decode() if ready else f"no answer within {DEADLINE_S} s"
    os.waitpid(pid, 0)
    return message


async def _open_and_close(path: Path) -> str:
    store = SqliteStore(path, busy_timeout_s=1)
    await store.open()
    await store.close()
    return "opened"


async def test_a_new_store_is_readable_by_its_owner_alone(tmp_path: Path) -> None:
    """Run by hand (umask 022, no unit's UMask=0077), the outbox and its -wal and -shm files were
    0644: every local user could read every notification."""
    path = tmp_path / "outbox.db"
    old = os.umask(0o022)
    try:
        store = SqliteStore(path)
        await store.open()
        try:
            modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
        finally:
            await store.close()
    finally:
        os.umask(old)
    assert modes["outbox.db"] == 0o600
    assert modes.get("outbox.db-wal", 0o600) == 0o600 and modes.get("outbox.db-shm", 0o600) == 0o600
    assert "outbox.db-wal" in modes
