"""Per-token rate limits: one token bucket per token, whichever endpoint, port or process it uses.

A token's ``rate_limit`` (``api.tokens[].rate_limit``) is a token bucket: ``per_second`` on
average, bursts of up to ``burst`` requests. Every endpoint that authenticates a token takes from
that one bucket: the API port's reads and operations, ``POST /v1/notifications``, the
Alertmanager and Grafana webhooks, and the same endpoints on the intake workers' port
(``intake.workers``), which are other processes.

:class:`SharedBuckets` keeps the buckets in a small table of shared memory (a ``memfd``) that the
daemon creates and hands to each worker as a file descriptor; a POSIX record lock (``lockf``) makes
each take one atomic read-modify-write across the processes. ``time.monotonic`` is the system's
``CLOCK_MONOTONIC``, so every process reads the same clock. :class:`LocalBuckets` is the same
arithmetic in one process's memory (tests, and the rare token that finds the table full).

Buckets are kept per host: the nodes of a high-availability pair each keep their own.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import struct
import tempfile
from collections import Counter
from collections.abc import Iterator
from typing import Protocol

log = logging.getLogger(__name__)

#: how many token names the shared table holds (slots are never freed: names of tokens removed by
#: a reload keep theirs until the daemon restarts)
SLOTS = 1024
#: per slot: the name's 16-byte digest (zeros: free), the tokens left, when they were counted, and
#: how many requests were refused (the metric ``backchannel_api_rate_limited_total``)
_SLOT = struct.Struct("=16sddQ")
_HEADER = struct.Struct("=8sI")
_MAGIC = b"bcrate02"
SIZE = _HEADER.size + SLOTS * _SLOT.size
_FREE = bytes(16)
#: the kernel's flag for a memfd that can never be made executable (Linux 6.3+; EINVAL before)
_MFD_NOEXEC_SEAL = 0x0008


class Buckets(Protocol):
    def take(self, name: str, per_second: float, burst: int, now: float) -> float:
        """Take one request from ``name``'s bucket: 0 if admitted, else the seconds until it would be."""

    def refused(self, name: str) -> int:
        """How many of ``name``'s requests were refused since the buckets were made."""


def refill_and_take(
    tokens: float, at: float, per_second: float, burst: int, now: float
) -> tuple[float, float, float]:
    """A bucket holding ``tokens`` at ``at``, asked for one at ``now``: (tokens left, seconds to
    wait, the time they are counted at).

    A refused request still counts the refill up to ``now``, so a client that keeps retrying early
    is told the true wait each time. A ``now`` before ``at`` (a process that read the clock, then
    waited for the lock while another counted a later time) counts as ``at``: the interval between
    them is never refilled twice.
    """
    now = max(now, at)
    tokens = min(float(burst), tokens + (now - at) * per_second)
    if tokens < 1:
        return tokens, (1 - tokens) / per_second, now
    return tokens - 1, 0.0, now


class LocalBuckets:
    """The buckets in this process's memory."""

    def __init__(self) -> None:
        self._state: dict[str, tuple[float, float]] = {}
        self._refused: Counter[str] = Counter()

    def take(self, name: str, per_second: float, burst: int, now: float) -> float:
        tokens, at = self._state.get(name, (float(burst), now))
        tokens, wait_s, at = refill_and_take(tokens, at, per_second, burst, now)
        self._state[name] = (tokens, at)
        if wait_s > 0:
            self._refused[name] += 1
        return wait_s

    def refused(self, name: str) -> int:
        return self._refused[name]


class SharedBuckets:
    """The buckets in shared memory, for the daemon and its intake workers.

    Called from one thread per process (the event loop): ``lockf`` excludes other processes, not
    other threads of this one.
    """

    def __init__(self, fd: int) -> None:
        """Attach to a table :meth:`create` made (this process's copy of its descriptor)."""
        self._fd = fd
        if os.fstat(fd).st_size != SIZE:
            raise ValueError(f"file descriptor {fd} is not a rate-limit table of {SIZE} bytes")
        self._map = mmap.mmap(fd, SIZE)
        magic, slots = _HEADER.unpack_from(self._map, 0)
        if magic != _MAGIC or slots != SLOTS:
            self._map.close()
            raise ValueError(f"file descriptor {fd} holds no rate-limit table this version reads")
        #: where each name's slot is (a slot, once taken, keeps its name)
        self._offsets: dict[str, int] = {}
        #: names that found the table full, limited in this process alone
        self._overflow = LocalBuckets()
        self._overflowed: set[str] = set()

    @classmethod
    def create(cls) -> SharedBuckets:
        fd = _anonymous_file()
        try:
            os.ftruncate(fd, SIZE)
            os.pwrite(fd, _HEADER.pack(_MAGIC, SLOTS), 0)
            return cls(fd)
        except BaseException:
            os.close(fd)
            raise

    @property
    def fd(self) -> int:
        """The descriptor to hand a worker (``pass_fds``); it attaches with ``SharedBuckets(fd)``."""
        return self._fd

    def close(self) -> None:
        """Unmap and close (once; later calls do nothing, later takes raise ValueError)."""
        if self._fd < 0:
            return
        self._map.close()
        os.close(self._fd)
        self._fd = -1

    def take(self, name: str, per_second: float, burst: int, now: float) -> float:
        if name in self._overflowed:
            return self._overflow.take(name, per_second, burst, now)
        with self._locked():
            offset = self._offsets.get(name)
            if offset is None:
                offset = self._slot(name, burst, now)
                if offset is None:
                    self._overflowed.add(name)
                    return self._overflow.take(name, per_second, burst, now)
                self._offsets[name] = offset
            key, tokens, at, refused = _SLOT.unpack_from(self._map, offset)
            tokens, wait_s, at = refill_and_take(tokens, at, per_second, burst, now)
            _SLOT.pack_into(self._map, offset, key, tokens, at, refused + (wait_s > 0))
            return wait_s

    def refused(self, name: str) -> int:
        """Refusals on every port (and this process's own, for a name the full table left out)."""
        key = _key(name)
        with self._locked():
            offset = self._probe(key)
            count = 0
            if offset is not None and self._map[offset : offset + 16] == key:
                count = _SLOT.unpack_from(self._map, offset)[3]
        return count + self._overflow.refused(name)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The table to this process alone (a POSIX record lock: other processes wait, briefly, as
        the event loop does meanwhile; each holder keeps it for one slot's read and write)."""
        if self._fd < 0:
            raise ValueError("the rate-limit table is closed")
        fcntl.lockf(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _slot(self, name: str, burst: int, now: float) -> int | None:
        """The offset of ``name``'s slot, taken (a full bucket) if it had none; None if full (the
        caller holds the lock)."""
        key = _key(name)
        offset = self._probe(key)
        if offset is not None:
            if self._map[offset : offset + 16] == _FREE:
                _SLOT.pack_into(self._map, offset, key, float(burst), now, 0)
            return offset
        log.error(
            "the shared rate-limit table is full (%d token names since the daemon started): "
            "token %r is limited per process until a restart",
            SLOTS,
            name,
            extra={"event": "api.rate_limit_table_full"},
        )
        return None

    def _probe(self, key: bytes) -> int | None:
        """The offset of ``key``'s slot, or of the free slot it would take; None if the table is full.

        Open addressing from the digest's first bytes; the caller holds the lock.
        """
        for offset in _offsets(key):
            if self._map[offset : offset + 16] in (key, _FREE):
                return offset
        return None


def _key(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=16).digest()


def _offsets(key: bytes) -> Iterator[int]:
    """The slots a key may occupy, in the order it looks for them (open addressing)."""
    start = int.from_bytes(key[:8], "little") % SLOTS
    for i in range(SLOTS):
        yield _HEADER.size + ((start + i) % SLOTS) * _SLOT.size


def _anonymous_file() -> int:
    """A file in memory only, never executable where the kernel can promise it."""
    for flags in (os.MFD_CLOEXEC | _MFD_NOEXEC_SEAL, os.MFD_CLOEXEC):
        with contextlib.suppress(OSError):
            return os.memfd_create("backchannel-rate-limits", flags)
    # No memfd (a sandbox that forbids it): an unlinked file serves as well.
    with tempfile.TemporaryFile() as file:
        return os.dup(file.fileno())
