"""Per-destination pacing: at most N messages per interval to one destination, first come first served.

Vendors rate-limit per destination (Slack: about one message per second per channel; Twilio: one
segment per second per long-code sender) and punish bursts with 429s or blocked numbers. A
:class:`Pacer` is a token bucket per key: ``rate_per_s`` tokens a second, at most ``burst`` saved
up. Waiters on one key are served strictly in arrival order, so a paced burst also keeps its order.

A cost larger than ``burst`` (a 5-segment SMS through a bucket of 1) waits for a full bucket and
then overdraws it, so the debt delays whoever comes next instead of blocking forever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_at: float
    #: callers holding or waiting for ``lock``; a bucket in use is never forgotten
    users: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Pacer:
    """A FIFO token bucket per destination key."""

    def __init__(
        self,
        rate_per_s: float,
        *,
        burst: int = 1,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._monotonic = monotonic
        self._sleep = sleep
        self._buckets: dict[str, _Bucket] = {}

    async def acquire(self, key: str, cost: float = 1.0) -> None:
        """Wait, behind earlier callers for ``key``, until ``cost`` tokens are free, then take them."""
        if cost <= 0:
            raise ValueError(f"cost must be positive, got {cost}")
        bucket = self._bucket(key)
        bucket.users += 1
        try:
            # asyncio.Lock wakes waiters in FIFO order and lets no newcomer jump a queue with waiters.
            async with bucket.lock:
                needed = min(cost, float(self.burst))
                while (shortfall := needed - self._refill(bucket)) > 0:
                    await self._sleep(shortfall / self.rate_per_s)
                bucket.tokens -= cost
        finally:
            bucket.users -= 1

    def _bucket(self, key: str) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            self._forget_idle()
            bucket = _Bucket(tokens=float(self.burst), updated_at=self._monotonic())
            self._buckets[key] = bucket
        return bucket

    def _refill(self, bucket: _Bucket) -> float:
        now = self._monotonic()
        elapsed = max(0.0, now - bucket.updated_at)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate_per_s)
        bucket.updated_at = now
        return bucket.tokens

    def _forget_idle(self) -> None:
        """Drop unused buckets that would be full by now, so one-off destinations do not pile up."""
        now = self._monotonic()
        for key, bucket in list(self._buckets.items()):
            idle_s = max(0.0, now - bucket.updated_at)
            if bucket.users == 0 and bucket.tokens + idle_s * self.rate_per_s >= self.burst:
                del self._buckets[key]
