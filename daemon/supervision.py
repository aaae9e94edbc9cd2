"""Telling systemd how the daemon is doing: READY, STATUS, WATCHDOG, RELOADING, STOPPING.

READY=1 is sent only once the store is open and the API is bound. The watchdog is fed from the
event loop, and only while the dispatcher keeps completing passes: a wedged loop or a stuck
dispatcher stops the pings, and systemd restarts the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from daemon.sdnotify import Notifier, Progress, watchdog_loop

log = logging.getLogger(__name__)

STATUS_EVERY_S = 5.0


class Supervision:
    def __init__(
        self,
        env: Mapping[str, str],
        status: Callable[[], Awaitable[str]],
        dispatcher_quiet_limit_s: float,
    ) -> None:
        self.notifier = Notifier(env)
        self.progress = Progress()
        self._status = status
        self._quiet_limit_s = dispatcher_quiet_limit_s
        self._tasks: list[asyncio.Task[None]] = []

    def beat(self) -> None:
        """The dispatcher completed a pass."""
        self.progress.beat("dispatcher")

    async def ready(self) -> None:
        self.notifier.ready(await self._status())
        self.progress.expect("dispatcher", self._quiet_limit_s)
        self._tasks.append(asyncio.create_task(self._status_loop(), name="sd-status"))
        interval = self.notifier.watchdog_interval()
        if interval is not None:
            self._tasks.append(
                asyncio.create_task(watchdog_loop(self.notifier, interval, self.progress.healthy))
            )

    def reloading(self) -> None:
        self.notifier.reloading("reloading configuration")

    async def reloaded(self) -> None:
        self.notifier.ready(await self._status())

    async def stopping(self) -> None:
        self.notifier.stopping("draining: finishing sends in flight")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.notifier.close()

    async def _status_loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            try:
                line = await self._status()
            except Exception:  # a bug in the line must not end its updates, nor fail the stop
                if not failing:  # once, not every few seconds
                    log.exception("the systemd status line could not be made; it is tried again")
                failing = True
                continue
            failing = False
            self.notifier.status(line)
