"""Each channel's sends in flight: the tasks that send and record, within the channel's cap.

One failing channel never holds up the others: each has its own cap on sends in flight
(``concurrency``), and a send done whose outcome is being recorded no longer counts against it
(see :meth:`SendSlots.free`). A task that ends wakes the dispatcher; one that crashes is logged.
At shutdown the sends still going get the grace period, then are cancelled: their claims stay in
the outbox for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping

from daemon.dispatch_policy import ChannelPolicy

log = logging.getLogger("daemon.dispatcher")

#: a channel's deliveries sending or recording their outcome, at most, per send it may have in flight
RECORDING_PER_SLOT = 2


class SendSlots:
    def __init__(
        self, channels: Iterable[str], policies: Mapping[str, ChannelPolicy], wake: Callable[[], None]
    ) -> None:
        self._policies = policies
        self._wake = wake
        self._in_flight: dict[str, set[asyncio.Task[None]]] = {name: set() for name in channels}
        #: of those, the ones done sending and recording their outcome (not counted as sends)
        self._recording: dict[str, int] = dict.fromkeys(self._in_flight, 0)

    @property
    def total(self) -> int:
        return sum(len(tasks) for tasks in self._in_flight.values())

    def idle(self, name: str) -> bool:
        return not self._in_flight[name]

    def free(self, name: str) -> int:
        """Sends the channel may start now.

        ``concurrency`` caps the sends in flight, not their bookkeeping: a send done whose outcome
        waits for its commit and sync (about a millisecond, more under load) frees its slot, else
        the disk, not the receiver, would set the pace. Sending and recording together stay within
        RECORDING_PER_SLOT times ``concurrency``.
        """
        concurrency = self._policies[name].concurrency
        tasks, recording = len(self._in_flight[name]), self._recording[name]
        return max(0, min(concurrency - (tasks - recording), concurrency * RECORDING_PER_SLOT - tasks))

    @contextlib.contextmanager
    def recording(self, name: str) -> Iterator[None]:
        """The send is done; while its outcome is recorded it no longer counts against the cap."""
        was_full = self.free(name) == 0
        self._recording[name] += 1
        if was_full and self.free(name) > 0:
            self._wake()  # the channel was full of sends: a slot is free now
        try:
            yield
        finally:
            self._recording[name] -= 1

    def spawn(self, name: str, work: Coroutine[None, None, None], task_name: str) -> None:
        task = asyncio.create_task(work, name=task_name)
        tasks = self._in_flight[name]
        tasks.add(task)
        task.add_done_callback(lambda t: self._finished(tasks, t))

    def _finished(self, tasks: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        self._wake()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("delivery task crashed", exc_info=exc, extra={"event": "delivery.crashed"})

    async def drain(self, grace_s: float) -> None:
        """Wait for the sends in flight within the grace period; cancel the rest."""
        tasks = [t for group in self._in_flight.values() for t in group]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            log.warning(
                "%d sends still in flight at shutdown stay in the outbox",
                len(pending),
                extra={"event": "dispatch.drain_timeout", "count": len(pending)},
            )
