"""A channel's own threads for a vendor's blocking SDK, and a deadline over each call.

The Slack and SMS adapters run their vendors' sync clients in threads. ``asyncio.to_thread`` uses
the loop's one default pool (``min(32, cores + 4)`` threads: six on a two-core host), which the
other adapters and the SMTP intake share: a vendor that accepts connections and never answers
held every thread of it for the SDK's timeout, again at each retry, and another channel's sends
waited behind it. Each adapter now has threads of its own, so a vendor that hangs slows only its
channel.

The SDKs' timeouts bound each socket operation, not a call: a reply trickling in a byte at a time
kept a send going past its claim's lease, and the delivery was claimed and sent again. The
deadline bounds the whole call; the thread is left to finish (or time out) on its own, and its
late answer is dropped.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

R = TypeVar("R")

#: threads per channel: sends are serialised per destination, so a few cover a burst
WORKERS = 4
#: what a call may take beyond the SDK's own timeout, which normally fires first with its own error
DEADLINE_MARGIN_S = 1.0


class CallTimedOut(Exception):
    """The call did not return within its deadline (its thread may still be running)."""


class SdkThreads:
    def __init__(self, name: str, timeout_s: float, workers: int = WORKERS) -> None:
        """``timeout_s``: the SDK's own timeout; a call's deadline is a little longer."""
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"channel-{name}")
        self.deadline_s = timeout_s + DEADLINE_MARGIN_S

    async def run(self, function: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """``function(*args, **kwargs)`` on one of these threads; CallTimedOut past the deadline."""
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self._pool, functools.partial(function, *args, **kwargs))
        try:
            async with asyncio.timeout(self.deadline_s):
                return await call
        except TimeoutError as exc:
            raise CallTimedOut(f"no answer within {self.deadline_s:g}s") from exc

    def close(self) -> None:
        """No new calls; those still running finish on their own (a vendor that hangs must not
        hold up a shutdown)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
