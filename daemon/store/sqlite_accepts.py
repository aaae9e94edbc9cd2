"""Accepts into the SQLite store, batched on the event loop.

Concurrent accepts (the requests one event-loop turn reads) share one writer job, one transaction
and one fsync (:class:`~daemon.store.writer.GroupCommitWriter`); a lone one commits on the loop's
own connection when it can (:meth:`Accepts._here`). Each caller's ``on_visible`` hook runs once its
notifications are committed, before the sync that makes them durable; the caller is answered
after the sync.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from daemon.core.model import Mode
from daemon.store import codec, sqlite_accept_tx, sqlite_provider
from daemon.store.base import AcceptResult, KeyReused, OnVisible, answer
from daemon.store.sqlite_inline import MISSED, InlineConnection, Missed
from daemon.store.values import Accepted, NewNotification
from daemon.store.writer import GroupCommitWriter

log = logging.getLogger(__name__)

#: one accept call: its notifications, the time, the caller's future, its on_visible hook
_Accept = tuple[
    Sequence[NewNotification],
    datetime,
    "asyncio.Future[list[Accepted]]",
    OnVisible | None,
]

#: a lone accept of at most this many notifications may commit on the event loop's connection
INLINE_ACCEPT_MAX = 10
#: every so many accepts committed there, one goes to the writer thread, whose connection
#: checkpoints the WAL (the event loop's never does: a checkpoint may take milliseconds)
CHECKPOINT_EVERY = 32


class Accepts:
    def __init__(self, writer: GroupCommitWriter, inline: InlineConnection) -> None:
        self._writer = writer
        self._inline = inline
        self._accepts: list[_Accept] = []
        self._flushes: set[asyncio.Task[None]] = set()
        self._inline_accepts = 0

    async def accept(
        self, items: Sequence[NewNotification], now: datetime, on_visible: OnVisible | None
    ) -> list[Accepted]:
        """Commit durably; concurrent calls from the event loop share one writer job and one fsync."""
        future: asyncio.Future[list[Accepted]] = asyncio.get_running_loop().create_future()
        self._accepts.append((items, now, future, on_visible))
        if len(self._accepts) == 1:
            flush = asyncio.create_task(self._flush())
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        return await future

    async def _flush(self) -> None:
        batch, rows = _rows(self._accepts)
        self._accepts = []
        if not batch:
            return
        loop = asyncio.get_running_loop()

        def accept(conn: sqlite3.Connection) -> list[AcceptResult]:
            mode = sqlite_provider.current_mode(conn)  # once for the batch: an accept never changes it
            return [
                _accept_one(conn, items, now, mode, made)
                for (items, now, _, _), made in zip(batch, rows, strict=True)
            ]

        def committed(results: list[AcceptResult]) -> None:  # on the writer thread
            loop.call_soon_threadsafe(_visible, batch, results)  # runs before the answers do

        try:
            results = self._here(batch, accept)
            if isinstance(results, Missed):
                results = await self._writer.run(accept, on_committed=committed)
            else:
                # Told first, then synced. In an intake worker telling is a pipe write, after which
                # the kernel may run the daemon it woke on this CPU at once (a pipe's wake-up
                # expects the writer to sleep): the sync then starts ~1 ms later and the 202 comes
                # later (p50 3.4 against 2.7 ms one at a time), but the delivery, which is what
                # counts, comes sooner (2.3 against 2.7 ms) than with the sync started first.
                _visible(batch, results)
                await self._writer.synced()
        except BaseException as exc:  # every caller gets the failure; nothing was acknowledged
            for _, _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future, _), accepted in zip(batch, results, strict=True):
            answer(future, accepted)

    def _here(
        self, batch: Sequence[_Accept], accept: Callable[[sqlite3.Connection], list[AcceptResult]]
    ) -> list[AcceptResult] | Missed:
        """A lone accept, committed on the event loop's connection (not yet synced), or MISSED.

        Lone: one caller's few notifications while the writer thread has nothing queued (the
        common case below a few hundred requests a second): no thread hand-off before the commit,
        so the notification is visible (and its delivery can start) about 0.2 ms sooner; the
        writer's sync thread then makes it durable (:meth:`GroupCommitWriter.synced`). Anything
        more goes to the writer thread, which commits what queues up while it works in one
        transaction; so does the lock being taken, and every CHECKPOINT_EVERY-th.
        """
        if len(batch) != 1 or len(batch[0][0]) > INLINE_ACCEPT_MAX or self._writer.busy:
            return MISSED
        self._inline_accepts += 1
        if self._inline_accepts % CHECKPOINT_EVERY == 0:
            return MISSED
        return self._inline.write(accept)


def _rows(accepts: Sequence[_Accept]) -> tuple[list[_Accept], list[list[dict[str, Any]]]]:
    """Each accept's rows, made before the write lock is taken (every process writing to the store
    waits while it is held); an accept whose rows cannot be made fails alone, the others go on."""
    batch, rows = [], []
    for accept in accepts:
        items, _, future, _ = accept
        try:
            rows.append([codec.notification_params(item.notification) for item in items])
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            continue
        batch.append(accept)
    return batch, rows


def _accept_one(
    conn: sqlite3.Connection,
    items: Sequence[NewNotification],
    now: datetime,
    mode: Mode,
    rows: Sequence[dict[str, Any]],
) -> AcceptResult:
    """One caller's accept in the shared transaction; a reused key refuses that caller alone
    (:func:`sqlite_accept_tx.accept` raises it before writing anything)."""
    try:
        return sqlite_accept_tx.accept(conn, items, now, mode, rows)
    except KeyReused as exc:
        return exc


def _visible(batch: Sequence[_Accept], results: list[AcceptResult]) -> None:
    """Each caller's on_visible hook with its results; a hook's bug costs no one the commit."""
    for (_, _, _, hook), accepted in zip(batch, results, strict=True):
        if hook is not None and not isinstance(accepted, KeyReused):
            try:
                hook(accepted)
            except Exception:
                log.exception("accept hook failed")
