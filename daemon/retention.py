"""Retention: finished notifications older than ``store.retention`` are deleted, hourly, by the leader.

Without it the outbox grows for ever: every notification with its deliveries and attempts, and
every message of the SMTP smart host with its bytes (up to 25 MiB each). A notification is
deleted once it is finished (delivered, failed, cancelled or acknowledged), nothing of it is left
to send or being sent, and it has not changed for ``store.retention`` (30 days by default; at
least 7; ``null`` keeps everything). What the recovery's catch-up will read is kept longer: while
the provider is out, however long, everything since a day before the outage began (its smart-host
mail still owed to mailboxes, its sends still owed a catch-up email), and so for a day after it
ends (the catch-up's horizon, at a start or an election). A batch of :data:`BATCH` per
transaction, the loop yielding between batches so that intake and delivery go on. The leader
alone runs it (alone, the node); a store error is logged and the next run tries again. See
docs/operations.md, "Retention".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from daemon.catchup import EVENTS, HORIZON, LOOKBACK
from daemon.clock import Clock
from daemon.core.catchup import last_outage, outage_start
from daemon.store.base import Store, StoreError

log = logging.getLogger(__name__)

#: notifications deleted per transaction
BATCH = 500
#: how often the leader looks, and how long after the start it first does
EVERY_S = 3600.0
FIRST_AFTER_S = 60.0


class Pruner:
    def __init__(
        self,
        store: Store,
        retention: timedelta | None,
        clock: Clock,
        leads: Callable[[], bool],
        *,
        every_s: float = EVERY_S,
        first_after_s: float = FIRST_AFTER_S,
        batch: int = BATCH,
        on_pruned: Callable[[int], None] = lambda n: None,
        on_failed: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._retention = retention
        self._clock = clock
        self._leads = leads
        self._every_s = every_s
        self._first_after_s = first_after_s
        self._batch = batch
        self._on_pruned = on_pruned
        self._on_failed = on_failed
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        self._stopped.set()

    async def run(self) -> None:
        """Until :meth:`stop`: a pass soon after the start, then one every hour, while leading."""
        if self._retention is None:
            return
        delay = self._first_after_s
        while not await self._pause(delay):
            if self._leads():
                await self.run_once()
            delay = self._every_s

    async def run_once(self) -> int:
        """Delete what is past the retention now, a batch at a time; how many. Never raises StoreError."""
        if self._retention is None:
            return 0
        total = 0
        try:
            before = await self._cut(self._retention)
            while before is not None and not self._stopped.is_set():
                deleted = await self._store.prune(before, self._batch)
                total += deleted
                self._on_pruned(deleted)
                if deleted < self._batch:
                    break
                await asyncio.sleep(0)  # the intake's and the dispatcher's turn between batches
        except StoreError as exc:
            self._on_failed()
            log.warning(
                "retention: could not delete old notifications (%d deleted this run): %s",
                total,
                exc,
                extra={"event": "store.prune_failed", "count": total},
            )
            return total
        if total and before is not None:
            log.info(
                "retention: %d finished notifications older than %s deleted",
                total,
                before.isoformat(timespec="seconds"),
                extra={"event": "store.pruned", "count": total},
            )
        return total

    async def _cut(self, retention: timedelta) -> datetime | None:
        """Before when this run deletes: the retention's cut, or earlier to keep what the catch-up
        of an outage reads (since a day before its start): one going on, however long, or one
        ended within the catch-up's horizon. None: an outage whose start is out of sight."""
        now = self._clock.now()
        cut = now - retention
        provider = await self._store.provider(events=EVENTS, checks=0)
        transitions = list(reversed(provider.events))
        if provider.mode == "outage":
            started_at = outage_start(transitions)
            return None if started_at is None else min(cut, started_at - LOOKBACK)
        ended = last_outage(transitions)
        if ended is None or now - ended.ended_at > HORIZON:
            return cut
        return min(cut, ended.started_at - LOOKBACK)

    async def _pause(self, delay_s: float) -> bool:
        """Wait ``delay_s``; whether the pruner was stopped meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), delay_s)
        return self._stopped.is_set()
