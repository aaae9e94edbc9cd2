"""How the dispatcher treats each channel and paces its passes: built once from the config.

A :class:`ChannelPolicy` per channel (its retries, its cap on sends in flight, whether its failures
speak for the provider, its digest policy) and one :class:`DispatchSettings` for the loop. Kept
apart so the dispatcher, :mod:`daemon.send_slots` and :mod:`daemon.delivering` share them without
importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daemon.core.backoff import RetryPolicy
from daemon.digesting import DigestPolicy


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: int = 4
    #: failures of this channel that implicate the provider feed health tracking
    primary: bool = False
    #: bursts past the channel's pace become digests; None sends every delivery on its own
    digest: DigestPolicy | None = None


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    poll_s: float = 1.0
    lease_s: float = 300.0
    drain_grace_s: float = 10.0
