"""The provider health state machine, with virtual time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.core.health import HealthTracker, Thresholds
from daemon.core.model import CheckResult, CheckStatus, ProviderState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def result(status: CheckStatus, i: int = 0) -> CheckResult:
    return CheckResult("smtp", status, "test", 0.01, T0 + timedelta(seconds=15 * i))


def feed(tracker: HealthTracker, statuses: list[CheckStatus]) -> list[ProviderState]:
    states = []
    for i, status in enumerate(statuses):
        tracker.observe(result(status, i))
        states.append(tracker.state)
    return states


OK, DOWN, UNKNOWN = CheckStatus.OK, CheckStatus.DOWN, CheckStatus.UNKNOWN
H, S, OUT, R = ProviderState.HEALTHY, ProviderState.SUSPECT, ProviderState.OUTAGE, ProviderState.RECOVERING


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([DOWN, DOWN, DOWN], [S, S, OUT]),
        ([DOWN, OK, DOWN, DOWN], [S, H, S, S]),
        ([DOWN, DOWN, DOWN, OK, OK, OK], [S, S, OUT, R, R, H]),
        ([DOWN, DOWN, DOWN, OK, DOWN, OK, OK, OK], [S, S, OUT, R, OUT, R, R, H]),
        ([DOWN, UNKNOWN, DOWN, DOWN], [S, S, S, OUT]),
        ([CheckStatus.CREDENTIALS] * 5, [H] * 5),
        ([CheckStatus.DEGRADED, DOWN], [H, S]),
    ],
)
def test_transitions_follow_thresholds(statuses: list[CheckStatus], expected: list[ProviderState]) -> None:
    """States move healthy → suspect → outage → recovering → healthy by consecutive counts."""
    assert feed(HealthTracker(Thresholds(failure=3, success=3)), statuses) == expected


def test_transition_carries_its_cause() -> None:
    """The transition into outage names the count and the last failure."""
    tracker = HealthTracker(Thresholds(failure=2, success=2))
    tracker.observe(result(DOWN, 0))
    transition = tracker.observe(CheckResult("smtp", DOWN, "connection refused", 0.1, T0))
    assert transition is not None
    assert transition.to_state == OUT
    assert "2 consecutive failures" in transition.cause
    assert "connection refused" in transition.cause


def test_threshold_of_one_skips_intermediate_states() -> None:
    """With thresholds of 1 one failure is an outage and one success a recovery."""
    assert feed(HealthTracker(Thresholds(failure=1, success=1)), [DOWN, OK]) == [OUT, H]


def test_force_and_release() -> None:
    """An override wins until released, then the natural state shows again."""
    tracker = HealthTracker(Thresholds())
    forced = tracker.force(OUT, T0, "drill")
    assert forced is not None and forced.to_state == OUT and "drill" in forced.cause
    feed(tracker, [OK, OK, OK])
    assert tracker.state == OUT
    released = tracker.release(T0)
    assert released is not None and released.to_state == H


def test_passive_failures_count_once_per_interval() -> None:
    """A burst of failed sends in one moment counts as one failure."""
    tracker = HealthTracker(Thresholds(failure=2, passive_min_interval=timedelta(seconds=5)))
    assert tracker.observe_passive_failure(T0, "refused") is not None
    assert tracker.observe_passive_failure(T0 + timedelta(seconds=1), "refused") is None
    assert tracker.state == S
    tracker.observe_passive_failure(T0 + timedelta(seconds=6), "refused")
    assert tracker.state == OUT


statuses = st.lists(st.sampled_from(list(CheckStatus)), max_size=60)
thresholds = st.integers(min_value=1, max_value=6)


@settings(max_examples=300, deadline=None)
@given(statuses, thresholds, thresholds)
def test_never_outage_before_failure_threshold(seq: list[CheckStatus], fail: int, ok: int) -> None:
    """Entering outage always follows at least failure_threshold consecutive failures."""
    tracker = HealthTracker(Thresholds(failure=fail, success=ok))
    run = 0
    for i, status in enumerate(seq):
        before = tracker.state
        run = run + 1 if status == DOWN else (run if status in (UNKNOWN, CheckStatus.CREDENTIALS) else 0)
        tracker.observe(result(status, i))
        if before in (H, S) and tracker.state == OUT:
            assert run >= fail


@settings(max_examples=300, deadline=None)
@given(statuses, thresholds, thresholds)
def test_never_healthy_before_success_threshold(seq: list[CheckStatus], fail: int, ok: int) -> None:
    """Leaving outage for healthy always follows at least success_threshold consecutive successes."""
    tracker = HealthTracker(Thresholds(failure=fail, success=ok))
    run = 0
    for i, status in enumerate(seq):
        before = tracker.state
        success = status in (OK, CheckStatus.DEGRADED)
        run = run + 1 if success else (0 if status == DOWN else run)
        tracker.observe(result(status, i))
        if before in (OUT, R) and tracker.state == H:
            assert run >= ok
