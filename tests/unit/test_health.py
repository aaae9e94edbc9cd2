"""The provider health state machine, with virtual time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.core.assessment import CheckPolicy, Policy, Role, Verdict
from daemon.core.flapping import FlapThresholds
from daemon.core.health import HealthSnapshot, HealthTracker, Thresholds
from daemon.core.model import CheckResult, CheckStatus, Mode, ProviderState, mode_for

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
C, U, F = ProviderState.CREDENTIALS, ProviderState.UNKNOWN, ProviderState.FLAPPING


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([DOWN, DOWN, DOWN], [S, S, OUT]),
        ([DOWN, OK, DOWN, DOWN], [S, H, S, S]),
        ([DOWN, DOWN, DOWN, OK, OK, OK], [S, S, OUT, R, R, H]),
        ([DOWN, DOWN, DOWN, OK, DOWN, OK, OK, OK], [S, S, OUT, R, OUT, R, R, R]),
        ([DOWN, UNKNOWN, DOWN, DOWN], [S, S, S, OUT]),
        ([CheckStatus.CREDENTIALS] * 3 + [OK], [C, C, C, H]),
        ([DOWN, CheckStatus.CREDENTIALS, DOWN, DOWN], [S, C, S, OUT]),
        ([CheckStatus.DEGRADED, DOWN], [H, S]),
    ],
)
def test_transitions_follow_thresholds(statuses: list[CheckStatus], expected: list[ProviderState]) -> None:
    """States move healthy → suspect → outage → recovering → healthy by consecutive counts."""
    assert feed(HealthTracker(Thresholds(failure=3, success=3)), statuses) == expected


def test_a_recovery_after_a_relapse_waits_for_the_rounds_to_settle() -> None:
    """Clean, failing, clean again: recovery waits until the relapse has left the 21-round window."""
    tracker = HealthTracker(Thresholds(failure=3, success=3))
    feed(tracker, [DOWN, DOWN, DOWN, OK, DOWN])
    clean = 0
    while tracker.state != H:
        tracker.observe(result(OK, 5 + clean))
        clean += 1
    # the relapse (its changes at rounds 4 and 5) leaves the window once 25 rounds are kept
    assert clean == 25 - 5
    assert tracker.snapshot.successes == clean


def test_a_long_outage_recovers_after_success_threshold_rounds() -> None:
    """After a steady outage, the only change is the one that began the clean streak: no delay."""
    tracker = HealthTracker(Thresholds(failure=3, success=3))
    feed(tracker, [DOWN] * 30 + [OK, OK])
    assert tracker.state == R
    assert tracker.observe(result(OK, 40)) is not None
    assert tracker.state == H


def test_transition_carries_its_cause() -> None:
    """The transition into outage names the count of failing rounds and the last failure."""
    tracker = HealthTracker(Thresholds(failure=2, success=2))
    tracker.observe(result(DOWN, 0))
    transition = tracker.observe(CheckResult("smtp", DOWN, "connection refused", 0.1, T0))
    assert transition is not None
    assert transition.to_state == OUT
    assert "2 failing rounds" in transition.cause
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


@pytest.mark.parametrize(
    ("state", "in_force", "mode"),
    [
        (H, "outage", "healthy"),
        (S, "outage", "healthy"),
        (OUT, "healthy", "outage"),
        (R, "healthy", "outage"),
        (F, "healthy", "outage"),
        (U, "outage", "outage"),
        (U, "healthy", "healthy"),
        (C, "outage", "outage"),
        (C, "healthy", "healthy"),
    ],
)
def test_mode_for_keeps_the_mode_in_force_for_unknown_and_credentials(
    state: ProviderState, in_force: Mode, mode: Mode
) -> None:
    """unknown and credentials say nothing about the provider; flapping routes around it."""
    assert mode_for(state, in_force) == mode


def test_snapshot_layers_overlays_over_the_natural_state() -> None:
    """Forced beats unknown, unknown beats credentials, which shows only while routing is on email."""
    base = HealthSnapshot(natural=OUT, local=True, credentials=("smtp",))
    assert (base.state, base.mode) == (U, "outage")
    assert (replace(base, local=False).state, replace(base, local=False).mode) == (OUT, "outage")
    healthy = replace(base, natural=H, local=False)
    assert (healthy.state, healthy.mode) == (C, "healthy")
    forced = replace(base, forced=H, forced_reason="drill")
    assert (forced.state, forced.mode) == (H, "healthy")
    assert replace(base, local=False, held=True).state == F


def test_tracker_from_an_old_snapshot_keeps_working() -> None:
    """A snapshot stored before the new fields existed resumes with their defaults."""
    old = HealthSnapshot(natural=R, since=T0, failures=0, successes=2)
    tracker = HealthTracker(Thresholds(), old)
    assert tracker.mode == "outage"
    tracker.observe(result(OK, 1))
    assert tracker.state == H


#: the checks of the property below: two triggers, a confirm-only one, a status page and a control
NAMES = ("smtp", "imap", "canary", "status", "ctl")
MULTI = Policy(
    {
        "smtp": CheckPolicy(max_age=timedelta(seconds=40)),
        "imap": CheckPolicy(max_age=timedelta(seconds=40)),
        "canary": CheckPolicy(Role.CONFIRM, max_age=timedelta(seconds=90)),
        "status": CheckPolicy(Role.CORROBORATE),
        "ctl": CheckPolicy(Role.CONTROL),
    },
    quorum=1,
)
BREAK_FAILING = (Verdict.CLEAN, Verdict.BELOW_QUORUM)
BREAK_CLEAN = (Verdict.FAILING, Verdict.UNCONFIRMED)
arrivals = st.lists(
    st.tuples(st.sampled_from(NAMES), st.sampled_from(list(CheckStatus)), st.integers(0, 30)), max_size=80
)


@settings(max_examples=300, deadline=None)
@given(arrivals, thresholds, thresholds)
def test_routing_changes_side_only_after_enough_rounds(
    seq: list[tuple[str, CheckStatus, int]], fail: int, ok: int
) -> None:
    """With several checks, flapping and controls, failover needs failure_threshold failing rounds and
    failback success_threshold clean rounds, each run unbroken by contrary evidence."""
    tracker = HealthTracker(Thresholds(failure=fail, success=ok, flap=FlapThresholds(5, 20)), policy=MULTI)
    at, failing, clean = T0, 0, 0
    for name, status, gap in seq:
        at += timedelta(seconds=gap)
        before = tracker.mode
        tracker.observe(CheckResult(name, status, "p", 0.1, at))
        verdict = tracker.last_round.verdict if tracker.last_round else Verdict.NEUTRAL
        failing = failing + 1 if verdict == Verdict.FAILING else (0 if verdict in BREAK_FAILING else failing)
        clean = clean + 1 if verdict == Verdict.CLEAN else (0 if verdict in BREAK_CLEAN else clean)
        if (before, tracker.mode) == ("healthy", "outage"):
            assert failing >= fail
        if (before, tracker.mode) == ("outage", "healthy"):
            assert clean >= ok


def test_mode_for_an_overlay_without_the_mode_in_force_raises() -> None:
    """Guessing a mode for unknown would fail back in the middle of an outage: it raises instead."""
    with pytest.raises(ValueError, match="in_force"):
        mode_for(U)


def test_explain_says_when_recovery_waits_for_the_rounds_to_settle() -> None:
    """After a relapse, enough clean rounds are not enough yet, and explain says why."""
    tracker = HealthTracker(Thresholds(failure=3, success=3))
    feed(tracker, [DOWN, DOWN, DOWN, OK, DOWN, OK, OK, OK])
    why = tracker.explain(T0 + timedelta(minutes=2)).why
    assert any("still hold an earlier change" in line for line in why)
