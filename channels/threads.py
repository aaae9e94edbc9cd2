"""A channel's own threads for a vendor's blocking SDK, and a deadline over each call.

The Slack and SMS adapters run their vendors' sync clients in threads. ``asyncio.to_thread`` uses
the loop's one default pool (``min(32, cores + 4)`` threads: six on a two-core host), which the
other adapters and the SMTP intake share: a vendor that accepts connections and never answers
held every thread of it for the SDK's timeout, again at each retry, and another channel's sends
waited behind it. Each adapter now has threads of its own, so a vendor that hangs slows only its
channel.

The SDKs' timeouts bound each socket operation, not a call: a reply trickling in a byte at a time
kept a send going past its claim's lease, and the delivery was claimed and sent again. The
deadline bounds the whole call from the moment a thread starts it; a call that found no thread
free within the deadline is dropped unstarted (nothing was sent), so a timed-out call never posts
later because it merely waited its turn. A call past its deadline is left to finish (or hang) on
its own and its answer dropped: the threads are daemon threads, so a vendor that hangs never holds
up the process's exit either.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

R = TypeVar("R")

#: threads per channel: sends are serialised per destination, so a few cover a burst
WORKERS = 4
#: what a call may take beyond the SDK's own timeout, which normally fires first with its own error
DEADLINE_MARGIN_S = 1.0

_Job = tuple[Future[Any], Callable[[], Any]]


class CallTimedOut(Exception):
    """The call did not return within its deadline (if it started, its thread may still run)."""


class SdkThreads:
    def __init__(self, name: str, timeout_s: float, workers: int = WORKERS) -> None:
        """``timeout_s``: the SDK's own timeout; a call's deadline is a little longer."""
        self.deadline_s = timeout_s + DEADLINE_MARGIN_S
        self._name, self._workers = name, workers
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._started = False  # the threads start with the first call: a channel never used has none

    async def run(self, function: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """``function(*args, **kwargs)`` on one of these threads; CallTimedOut past the deadline."""
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()

        def begun() -> None:
            if not started.done():
                started.set_result(None)

        def call() -> R:
            loop.call_soon_threadsafe(begun)
            return function(*args, **kwargs)

        if not self._started:
            self._started = True
            for n in range(self._workers):
                threading.Thread(target=self._work, name=f"channel-{self._name}-{n}", daemon=True).start()
        job: Future[R] = Future()
        self._jobs.put((job, call))
        answer: asyncio.Future[R] = asyncio.wrap_future(job)
        try:
            async with asyncio.timeout(self.deadline_s):
                either: list[asyncio.Future[Any]] = [started, answer]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            if job.cancel():  # no thread took it: nothing was sent
                raise CallTimedOut(f"no thread free within {self.deadline_s:g}s") from None
        except asyncio.CancelledError:
            job.cancel()  # the send was cancelled (a shutdown): a job not yet started never starts
            raise
        try:
            async with asyncio.timeout(self.deadline_s):
                return await answer
        except TimeoutError as exc:
            raise CallTimedOut(f"no answer within {self.deadline_s:g}s") from exc

    def close(self) -> None:
        """The threads end once their calls do (one that hangs, never: a daemon thread)."""
        if self._started:
            for _ in range(self._workers):
                self._jobs.put(None)
            self._started = False

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
