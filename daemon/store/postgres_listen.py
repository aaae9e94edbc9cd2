"""Work announced by other nodes: LISTEN on a connection of its own, reconnecting when it drops.

PostgreSQL delivers a NOTIFY only to sessions listening at the moment it commits
(https://www.postgresql.org/docs/current/sql-notify.html): an announcement made while this node
was disconnected is gone. So every (re)connection counts as an announcement, and the
dispatcher's slow poll remains the backstop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import AsyncConnection

from daemon.store.postgres_queries import WORK_CHANNEL

log = logging.getLogger(__name__)


class WorkListener:
    def __init__(self, url: str, connect_args: dict[str, Any], node: str, reconnect_s: float) -> None:
        self._url = url
        self._connect_args = connect_args
        self._node = node
        self._reconnect_s = reconnect_s
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[], None]] = []
        #: set while LISTEN is in effect
        self.listening = asyncio.Event()

    async def start(self, timeout_s: float) -> None:
        """Start listening; raise TimeoutError when no LISTEN took effect within ``timeout_s``."""
        self._task = asyncio.create_task(self._run(), name="store-listen")
        try:
            await asyncio.wait_for(self.listening.wait(), timeout_s)
        except TimeoutError:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None

    def on_work(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    async def wait_for_work(self, timeout_s: float) -> bool:
        woken = asyncio.Event()
        self._listeners.append(woken.set)
        try:
            await asyncio.wait_for(woken.wait(), timeout_s)
        except TimeoutError:
            return False
        finally:
            self._listeners.remove(woken.set)
        return True

    def _announce(self) -> None:
        for listener in list(self._listeners):
            listener()

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except psycopg.Error as exc:
                log.warning("lost the LISTEN connection: %s", exc, extra={"event": "store.listen_lost"})
            self.listening.clear()
            await asyncio.sleep(self._reconnect_s)

    async def _listen(self) -> None:
        async with await AsyncConnection.connect(self._url, **self._connect_args) as conn:
            await conn.execute(f"LISTEN {WORK_CHANNEL}")
            self.listening.set()
            self._announce()
            async for notify in conn.notifies():
                # this node's own work already woke its dispatcher
                if notify.payload != self._node:
                    self._announce()
