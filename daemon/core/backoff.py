"""Retry timing: exponential backoff with jitter, bounded, and Retry-After honoured. Pure."""

from __future__ import annotations

from dataclasses import dataclass

#: the longest a server's Retry-After is waited for
RETRY_AFTER_MAX_S = 86_400.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_s: float = 1.0
    max_s: float = 300.0
    multiplier: float = 2.0
    #: attempts on one step before it counts as failed and the plan moves on
    max_attempts: int = 10

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s or self.multiplier < 1 or self.max_attempts < 1:
            raise ValueError(f"invalid retry policy {self}")


def retry_delay(
    policy: RetryPolicy, attempt: int, jitter: float, retry_after_s: float | None = None
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    "Equal jitter": half the exponential delay is fixed and half is random, so retries of a burst
    spread out without any retry coming immediately. ``jitter`` is a number in [0, 1) the caller
    draws. A server's Retry-After is a floor, never shortened, but capped by the policy's maximum
    unless the server asks for more (it knows its own rate limits), up to a day
    (:data:`RETRY_AFTER_MAX_S`: a date in year 9999 overflowed the retry's time).
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter must be in [0, 1)")
    try:
        exponential = min(policy.max_s, policy.initial_s * policy.multiplier ** (attempt - 1))
    except OverflowError:  # 2.0 ** 1024: attempt 1025 of a delivery kept queued for days
        exponential = policy.max_s
    delay = exponential / 2 + jitter * exponential / 2
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, RETRY_AFTER_MAX_S))
    return delay


def exhausted(policy: RetryPolicy, attempts: int) -> bool:
    """Whether a step that has failed ``attempts`` times should give up."""
    return attempts >= policy.max_attempts
