"""Accepts into the PostgreSQL store, batched on the event loop.

Concurrent accepts (the requests one event-loop turn reads) share one transaction. A call that
raises (bad input) is not allowed to fail its neighbours: the batch is then run again one call
to a transaction; a transaction that could not commit fails every caller, as nothing was stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from daemon.store import postgres_accept_tx
from daemon.store.base import AcceptResult, StoreUnavailable, answer
from daemon.store.postgres_queries import Conn
from daemon.store.values import Accepted, NewNotification

#: one accept call: its notifications, the time, the caller's future
_Call = tuple[Sequence[NewNotification], datetime, "asyncio.Future[list[Accepted]]"]
#: the store's transaction runner (retries, errors mapped to StoreUnavailable)
Transaction = Callable[[Callable[[Conn], Awaitable[list[AcceptResult]]]], Awaitable[list[AcceptResult]]]


class Accepts:
    def __init__(self, transaction: Transaction, node: str) -> None:
        self._transaction = transaction
        self._node = node
        self._accepts: list[_Call] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def accept(self, items: Sequence[NewNotification], now: datetime) -> list[Accepted]:
        """Commit durably; concurrent calls from the event loop share one transaction."""
        future: asyncio.Future[list[Accepted]] = asyncio.get_running_loop().create_future()
        self._accepts.append((items, now, future))
        if len(self._accepts) == 1:
            flush = asyncio.create_task(self._flush())
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        return await future

    async def drain(self) -> None:
        """Wait for the flushes under way (the store closes its pool after)."""
        if self._flushes:
            await asyncio.wait(set(self._flushes))

    async def _flush(self) -> None:
        batch = [call for call in self._accepts if not call[2].done()]  # a cancelled caller gave up
        self._accepts = []
        if not batch:
            return
        try:
            results = await self._transaction(
                lambda conn: postgres_accept_tx.accept(conn, [c[:2] for c in batch], self._node)
            )
        except StoreUnavailable as exc:  # nothing was committed: every caller gets the failure
            _settle(batch, exc)
            return
        except Exception as exc:  # one caller's bad input must not fail the others: each alone
            if len(batch) == 1:
                _settle(batch, exc)
            else:
                await asyncio.gather(*(self._alone(call) for call in batch))
            return
        for (_, _, future), accepted in zip(batch, results, strict=True):
            answer(future, accepted)

    async def _alone(self, call: _Call) -> None:
        items, now, future = call
        try:
            (accepted,) = await self._transaction(
                lambda conn: postgres_accept_tx.accept(conn, [(items, now)], self._node)
            )
        except Exception as exc:
            _settle([call], exc)
        else:
            answer(future, accepted)


def _settle(calls: Sequence[_Call], exc: BaseException) -> None:
    for _, _, future in calls:
        if not future.done():
            future.set_exception(exc)
