"""Making SQLite commits durable after the write lock is released: ``fdatasync`` of the WAL.

Every connection of the store commits with ``synchronous=NORMAL``: in WAL mode the commit is
appended to the log and visible to every other connection at once, but not yet on disk. A
durable write then calls :meth:`WalSync.sync`, one ``fdatasync`` of the log file, which makes
that commit and every one appended before it survive a power cut: what ``synchronous=FULL``
does inside COMMIT, but with the write lock already released (the daemon's claims and another
process's commits are not kept waiting behind the disk, about 0.8 ms here when it is idle) and
with the notifications already visible, so they can be delivered while the disk syncs. Nobody
is told "accepted" before the sync returns. What SQLite keeps consistent in NORMAL mode it keeps
consistent here; the sync only adds durability.

The log file exists while any connection to the database is open, and SQLite deletes it only
when the last one closes; the store holds its connections open, so the file synced is the one
committed to. Still, the file is looked up by name before each sync and reopened if it is not
the one held (a copy restored underneath, say): never an ``fdatasync`` of a stale inode.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class WalSync:
    def __init__(self, database: Path) -> None:
        self.path = Path(f"{database}-wal")
        self._fd: int | None = None
        self._lock = threading.Lock()

    def sync(self) -> None:
        """Every commit appended to the log before this call is on disk when it returns (OSError)."""
        with self._lock:
            fd = self._current()
            os.fdatasync(fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _current(self) -> int:
        named = os.stat(self.path)
        if self._fd is not None:
            held = os.fstat(self._fd)
            if (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino):
                return self._fd
            os.close(self._fd)
            self._fd = None
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        return self._fd
