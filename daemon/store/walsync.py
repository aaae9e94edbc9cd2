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
committed to. It is opened at the first sync and checked by name before each one: a different
file under that name (replaced from outside) is an error, never a sync of the wrong file.

A failed sync is final for this process (:class:`SyncFailed` from then on, until a restart).
The commit it was for is already in the log, and later commits are chained after it; after an
I/O error Linux may mark the failed pages clean and report the error only once, so a later sync
could "succeed" while a power cut would still lose what it acknowledged. Callers get
StoreUnavailable: intake answers 503 (nothing more is acknowledged), the dispatcher keeps
retrying its records (applied once: ``_record_one`` ignores a delivery already settled).
What a restart cannot promise: the pages whose write failed may still sit in the page cache,
so the restarted process reads them and a later power cut can still lose them; a disk that
fails its syncs needs an operator (the critical log line says so). Each process (the daemon,
every intake worker) holds its own state: a worker started after the error may not see it.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class SyncFailed(OSError):
    """A sync failed earlier in this process: nothing more is acknowledged until a restart."""


class WalSync:
    def __init__(self, database: Path) -> None:
        self.path = Path(f"{database}-wal")
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._failed: OSError | None = None

    def sync(self) -> None:
        """Every commit appended to the log before this call is on disk when it returns (OSError)."""
        with self._lock:
            if self._failed is not None:
                earlier = f"an earlier sync of {self.path} failed ({self._failed}); restart"
                raise SyncFailed(errno.EIO, earlier)
            try:
                os.fdatasync(self._current())
            except OSError as exc:
                self._failed = exc
                log.critical(
                    "the store's log %s could not be synced: %s; nothing more is accepted until a restart; "
                    "check the disk",
                    self.path,
                    exc,
                    extra={"event": "store.sync_failed"},
                )
                raise

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _current(self) -> int:
        named = os.stat(self.path)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        held = os.fstat(self._fd)
        if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino):
            raise OSError(errno.ESTALE, f"{self.path} was replaced while the store had it open")
        return self._fd
