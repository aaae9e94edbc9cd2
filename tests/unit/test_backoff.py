"""Retry delays: exponential, jittered, capped, Retry-After honoured."""

from __future__ import annotations

import pytest

from daemon.core.backoff import RetryPolicy, exhausted, retry_delay

POLICY = RetryPolicy(initial_s=1, max_s=60, multiplier=2, max_attempts=5)


@pytest.mark.parametrize(("attempt", "low", "high"), [(1, 0.5, 1), (2, 1, 2), (4, 4, 8), (10, 30, 60)])
def test_delay_grows_and_is_capped(attempt: int, low: float, high: float) -> None:
    """Each attempt's delay lies in [half, full] of the capped exponential."""
    assert retry_delay(POLICY, attempt, 0.0) == pytest.approx(low)
    assert low <= retry_delay(POLICY, attempt, 0.999) <= high


def test_retry_after_is_a_floor() -> None:
    """A server's Retry-After is never shortened, even past the cap."""
    assert retry_delay(POLICY, 1, 0.5, retry_after_s=120) == 120
    assert retry_delay(POLICY, 4, 0.0, retry_after_s=0.1) == 4


def test_exhausted_after_max_attempts() -> None:
    """A step gives up once it has failed max_attempts times."""
    assert not exhausted(POLICY, 4)
    assert exhausted(POLICY, 5)


@pytest.mark.parametrize("jitter", [-0.1, 1.0])
def test_jitter_must_be_a_fraction(jitter: float) -> None:
    """Jitter outside [0, 1) is a programming error."""
    with pytest.raises(ValueError, match="jitter"):
        retry_delay(POLICY, 1, jitter)


def test_a_delivery_retried_for_days_keeps_the_cap() -> None:
    """Attempt 1025 (2.0 ** 1024 overflows a float) waits the policy's maximum, not a crash."""
    assert retry_delay(POLICY, 1025, 0.0) == 30
    assert retry_delay(RetryPolicy(multiplier=10), 5000, 0.999) <= 300


def test_a_retry_after_of_years_waits_a_day() -> None:
    """A Retry-After far in the future (an HTTP-date in year 9999) is taken as a day at most,
    where the retry's time overflowed."""
    assert retry_delay(POLICY, 1, 0.5, retry_after_s=2.5e11) == 86_400
    assert retry_delay(POLICY, 1, 0.5, retry_after_s=float("inf")) == 86_400
