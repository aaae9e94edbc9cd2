"""Rounds of check results: roles, weights, quorum, freshness, controls, credentials, explain."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from daemon.config_checks import CheckRoleConfig, DecidingConfig
from daemon.core.assessment import CheckPolicy, Policy, Role, Verdict, assess
from daemon.core.health import HealthTracker, Thresholds
from daemon.core.model import CheckResult, CheckStatus, ProviderState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OK, DOWN, UNKNOWN, CRED = CheckStatus.OK, CheckStatus.DOWN, CheckStatus.UNKNOWN, CheckStatus.CREDENTIALS
FAILING, CLEAN, NEUTRAL, LOCAL = Verdict.FAILING, Verdict.CLEAN, Verdict.NEUTRAL, Verdict.LOCAL
BELOW, UNCONFIRMED = Verdict.BELOW_QUORUM, Verdict.UNCONFIRMED
AGE = timedelta(seconds=45)

#: smtp and imap trigger (weight 1 each), roundtrip triggers with weight 2, a status page
#: corroborates, a slow canary only confirms, two TCP controls
POLICY = Policy(
    {
        "smtp": CheckPolicy(Role.TRIGGER, 1, AGE),
        "imap": CheckPolicy(Role.TRIGGER, 1, AGE),
        "roundtrip": CheckPolicy(Role.TRIGGER, 2, AGE),
        "canary": CheckPolicy(Role.CONFIRM, 1, AGE),
        "status": CheckPolicy(Role.CORROBORATE, 1, AGE),
        "ctl-a": CheckPolicy(Role.CONTROL, 1, AGE),
        "ctl-b": CheckPolicy(Role.CONTROL, 1, AGE),
    },
    quorum=2,
)
ALL_OK = {name: OK for name in POLICY.checks}


def res(check: str, status: CheckStatus, seconds: float = 0.0, reason: str = "test") -> CheckResult:
    return CheckResult(check, status, reason, 0.01, T0 + timedelta(seconds=seconds))


def round_of(statuses: dict[str, CheckStatus], arriving: str, policy: Policy = POLICY) -> Verdict:
    """The verdict when ``arriving`` reports last, every result being fresh."""
    latest = {name: res(name, status) for name, status in statuses.items()}
    return assess(policy, latest, latest[arriving], T0).verdict


@pytest.mark.parametrize(
    ("changes", "arriving", "verdict"),
    [
        ({}, "smtp", CLEAN),
        ({"smtp": DOWN}, "smtp", UNCONFIRMED),
        ({"smtp": DOWN}, "imap", BELOW),
        ({"smtp": DOWN, "imap": DOWN}, "imap", FAILING),
        ({"roundtrip": DOWN}, "roundtrip", FAILING),
        ({"smtp": DOWN, "imap": DOWN}, "canary", NEUTRAL),
        ({"smtp": DOWN, "imap": DOWN, "status": DOWN}, "status", NEUTRAL),
        ({"canary": DOWN}, "canary", UNCONFIRMED),
        ({"canary": DOWN}, "smtp", BELOW),
        ({"smtp": DOWN, "imap": DOWN}, "roundtrip", NEUTRAL),
        ({"status": DOWN}, "status", NEUTRAL),
        ({"status": DOWN}, "smtp", CLEAN),
        ({"smtp": UNKNOWN}, "imap", BELOW),
        ({"smtp": UNKNOWN}, "smtp", NEUTRAL),
        ({"smtp": CRED}, "smtp", NEUTRAL),
        ({"status": DOWN}, "ctl-a", NEUTRAL),
        ({"smtp": CheckStatus.DEGRADED}, "smtp", CLEAN),
        ({"roundtrip": DOWN, "ctl-a": DOWN, "ctl-b": DOWN}, "ctl-b", LOCAL),
        ({"roundtrip": DOWN, "ctl-a": DOWN}, "roundtrip", FAILING),
        ({"ctl-a": DOWN, "ctl-b": DOWN}, "smtp", CLEAN),
    ],
)
def test_round_verdicts(changes: dict[str, CheckStatus], arriving: str, verdict: Verdict) -> None:
    """Quorum by weight; confirm-only and corroborating checks never trigger; controls blame our network;
    fresh contrary evidence breaks streaks, results that say nothing about the provider do not."""
    assert round_of({**ALL_OK, **changes}, arriving) == verdict


def test_control_quorum_can_be_lower_than_every_control() -> None:
    """With controls.quorum 1, one failing control is enough to blame our network."""
    policy = Policy(POLICY.checks, quorum=2, control_quorum=1)
    assert round_of({**ALL_OK, "roundtrip": DOWN, "ctl-a": DOWN}, "ctl-a", policy) == LOCAL


def test_corroboration_can_be_required_for_recovery() -> None:
    """With require_corroboration, an incident still on the status page blocks a clean round."""
    policy = Policy(POLICY.checks, quorum=2, require_corroboration=True)
    assert round_of({**ALL_OK, "status": DOWN}, "smtp", policy) == BELOW
    assert round_of(ALL_OK, "smtp", policy) == CLEAN


def test_a_stale_result_does_not_count() -> None:
    """A DOWN older than the check's max_age neither counts towards quorum nor allows recovery."""
    latest = {name: res(name, OK, 60) for name in POLICY.checks}
    latest["roundtrip"] = res("roundtrip", DOWN, 0)
    assert assess(POLICY, latest, latest["smtp"], T0 + timedelta(seconds=60)).verdict == BELOW
    latest["imap"] = res("imap", DOWN, 60)
    assert assess(POLICY, latest, latest["imap"], T0 + timedelta(seconds=60)).verdict == UNCONFIRMED


def test_a_confirming_check_that_never_reported_blocks_recovery() -> None:
    """Recovery waits for every named confirming check, even one without a result yet."""
    statuses = {name: OK for name in POLICY.checks if name != "canary"}
    round_ = assess(POLICY, {n: res(n, s) for n, s in statuses.items()}, res("smtp", OK), T0)
    assert round_.verdict == BELOW
    assert "canary" in round_.cause


def test_failing_cause_names_the_checks_and_the_vendor() -> None:
    """A failing round names the checks down, the quorum and what the status page says."""
    latest = {name: res(name, OK) for name in POLICY.checks}
    latest |= {
        "roundtrip": res("roundtrip", DOWN, reason="canary lost"),
        "status": res("status", DOWN, reason="INC1"),
    }
    round_ = assess(POLICY, latest, latest["roundtrip"], T0)
    assert round_.verdict == FAILING
    assert "roundtrip down (weight 2, quorum 2)" in round_.cause
    assert "status: down: INC1" in round_.cause


def test_credentials_are_listed_whatever_the_role() -> None:
    """Every check whose latest result refused our credentials is named in the round."""
    latest = {name: res(name, OK) for name in POLICY.checks} | {"status": res("status", CRED)}
    assert assess(POLICY, latest, latest["smtp"], T0).credentials == ("status",)


def feed(tracker: HealthTracker, results: list[CheckResult]) -> list[ProviderState]:
    states = []
    for r in results:
        tracker.observe(r)
        states.append(tracker.state)
    return states


def test_controls_failing_too_means_unknown_and_no_failover() -> None:
    """Provider and controls failing together: state unknown, told once, routing never fails over."""
    policy = Policy({"smtp": CheckPolicy(), "ctl": CheckPolicy(Role.CONTROL)})
    tracker = HealthTracker(Thresholds(failure=2, success=2), policy=policy)
    transitions = []
    for i in range(20):
        for name in ("smtp", "ctl"):
            transitions.append(tracker.observe(res(name, DOWN, 15 * i + (name == "ctl"))))
            assert tracker.mode == "healthy"
    assert tracker.state == ProviderState.UNKNOWN
    told = [t for t in transitions if t is not None]
    assert [(t.from_state, t.to_state) for t in told] == [
        (ProviderState.HEALTHY, ProviderState.SUSPECT),
        (ProviderState.SUSPECT, ProviderState.UNKNOWN),
    ]
    assert "our network, not the provider" in told[-1].cause
    assert tracker.observe_passive_failure(T0 + timedelta(hours=1), "timeout") is None


def test_failed_sends_while_only_the_controls_read_down_declare_nothing() -> None:
    """Our resolver failing: the provider's check reads UNKNOWN (it cannot resolve), so no round
    is LOCAL, and the controls read DOWN; real sends failing meanwhile are no evidence against the
    provider. Once the controls recover, the same failures count again."""
    policy = Policy({"smtp": CheckPolicy(), "ctl": CheckPolicy(Role.CONTROL)})
    tracker = HealthTracker(Thresholds(failure=3, success=2), policy=policy)
    tracker.observe(res("smtp", CheckStatus.UNKNOWN, 0))
    tracker.observe(res("ctl", DOWN, 1))
    for minute in range(1, 6):
        assert tracker.observe_passive_failure(T0 + timedelta(seconds=60 * minute), "cannot resolve") is None
    assert tracker.state == ProviderState.HEALTHY
    tracker.observe(res("ctl", OK, 400))
    assert tracker.observe_passive_failure(T0 + timedelta(seconds=410), "refused") is not None
    assert tracker.state == ProviderState.SUSPECT


def test_a_dead_control_host_does_not_silence_failed_sends() -> None:
    """The control reads down but the provider's check reads working: our network works (the
    control's host is what failed), so real sends refused by the provider still count."""
    policy = Policy({"smtp": CheckPolicy(), "ctl": CheckPolicy(Role.CONTROL)})
    tracker = HealthTracker(Thresholds(failure=3, success=2), policy=policy)
    tracker.observe(res("smtp", CheckStatus.DEGRADED, 0))
    tracker.observe(res("ctl", DOWN, 1))
    assert tracker.observe_passive_failure(T0 + timedelta(seconds=60), "421 try later") is not None
    assert tracker.state == ProviderState.SUSPECT


def test_unknown_during_an_outage_keeps_routing_around_the_provider() -> None:
    """A local network failure while in outage shows unknown but stays in outage mode."""
    policy = Policy({"smtp": CheckPolicy(), "ctl": CheckPolicy(Role.CONTROL)})
    tracker = HealthTracker(Thresholds(failure=1, success=1), policy=policy)
    tracker.observe(res("ctl", OK, 0))
    tracker.observe(res("smtp", DOWN, 1))
    assert tracker.state == ProviderState.OUTAGE
    transition = tracker.observe(res("ctl", DOWN, 2))
    assert transition is not None and transition.to_state == ProviderState.UNKNOWN
    assert tracker.mode == "outage"
    back = tracker.observe(res("ctl", OK, 3))
    assert back is not None and back.to_state == ProviderState.OUTAGE
    assert "our network works again" in back.cause


def test_credentials_is_its_own_state_until_auth_works_again() -> None:
    """A refused login shows credentials (not an outage), tells ops to renew, clears on success."""
    tracker = HealthTracker(Thresholds())
    refused = tracker.observe(res("smtp", CRED, 0, "535 5.7.8 authentication failed"))
    assert refused is not None and refused.to_state == ProviderState.CREDENTIALS
    assert "renew" in refused.cause and "535" in refused.cause
    assert feed(tracker, [res("smtp", CRED, 15 * i) for i in range(1, 10)]) == [ProviderState.CREDENTIALS] * 9
    assert tracker.mode == "healthy"
    cleared = tracker.observe(res("smtp", OK, 200))
    assert cleared is not None and cleared.to_state == ProviderState.HEALTHY
    assert "accepted again by smtp" in cleared.cause


def test_credentials_do_not_hide_an_outage() -> None:
    """Once routing is on the outage side, the outage shows, not the credentials overlay."""
    policy = Policy({"smtp": CheckPolicy(), "graph": CheckPolicy(Role.CORROBORATE)})
    tracker = HealthTracker(Thresholds(failure=1), policy=policy)
    tracker.observe(res("graph", CRED, 0))
    assert tracker.state == ProviderState.CREDENTIALS
    tracker.observe(res("smtp", DOWN, 1))
    assert tracker.state == ProviderState.OUTAGE


def test_one_down_counts_once_however_many_checks_report_after_it() -> None:
    """A DOWN still latest when other checks report is not counted again: those rounds are neutral."""
    policy = Policy({"smtp": CheckPolicy(), "imap": CheckPolicy()})  # quorum 1
    tracker = HealthTracker(Thresholds(failure=3), policy=policy)
    tracker.observe(res("smtp", DOWN, 0))
    feed(tracker, [res("imap", OK, i) for i in range(1, 10)])
    assert tracker.snapshot.failures == 1
    assert tracker.last_round is not None and tracker.last_round.verdict == NEUTRAL
    tracker.observe(res("smtp", OK, 15))
    assert tracker.snapshot.failures == 0


def test_explain_shows_each_check_and_why() -> None:
    """explain() lists every check with its recent results and says why the state is what it is."""
    policy = Policy({"smtp": CheckPolicy(max_age=AGE), "canary": CheckPolicy(Role.CONFIRM, max_age=AGE)})
    tracker = HealthTracker(Thresholds(failure=2, success=2), policy=policy)
    feed(tracker, [res("smtp", DOWN, 0, "refused"), res("smtp", DOWN, 15, "refused"), res("smtp", OK, 30)])
    explanation = tracker.explain(T0 + timedelta(seconds=31))
    assert explanation.state == ProviderState.OUTAGE
    why = " | ".join(explanation.why)
    assert "outage: 2 failing rounds" in why
    assert "recovery waits for canary (no result yet" in why
    checks = {c.name: c for c in explanation.checks}
    assert [r.status for r in checks["smtp"].recent] == [DOWN, DOWN, OK]
    assert checks["canary"].latest is None
    data = json.loads(json.dumps(explanation.as_dict()))
    assert data["state"] == "outage" and data["mode"] == "outage"
    assert data["checks"][1]["recent"][0] == {"at": "2026-01-01T00:00:00Z", "status": "down"}


def test_config_builds_the_policy_with_default_max_age() -> None:
    """The YAML fields become a Policy; max_age defaults to the value the caller computes."""
    deciding = DecidingConfig.model_validate(
        {"quorum": 2, "controls": {"quorum": 1}, "flap": {"low": 4, "high": 30}}
    )
    checks = {
        "smtp": (CheckRoleConfig(), timedelta(seconds=40)),
        "rt": (CheckRoleConfig.model_validate({"weight": 2, "max_age": "10m"}), timedelta(seconds=400)),
        "dns": (CheckRoleConfig.model_validate({"role": "control"}), timedelta(seconds=70)),
    }
    policy = deciding.policy(checks)
    assert policy.of("smtp").max_age == timedelta(seconds=40)
    assert policy.of("rt") == CheckPolicy(Role.TRIGGER, 2, timedelta(minutes=10))
    assert (policy.quorum, policy.control_quorum) == (2, 1)
    assert deciding.flap.thresholds().high == 30


@pytest.mark.parametrize(
    ("deciding", "message"),
    [({"quorum": 3}, "quorum 3 exceeds"), ({"controls": {"quorum": 2}}, "controls.quorum 2 exceeds")],
)
def test_config_rejects_an_unreachable_quorum(deciding: dict[str, object], message: str) -> None:
    """A quorum larger than the weight that could ever reach it is a configuration error."""
    checks = {"smtp": (CheckRoleConfig(), AGE), "imap": (CheckRoleConfig(), AGE)}
    with pytest.raises(ValueError, match=message):
        DecidingConfig.model_validate(deciding).policy(checks)


@pytest.mark.parametrize("bad", [{"flap": {"low": 30, "high": 20}}, {"quorum": 0}, {"quorum_typo": 1}])
def test_config_rejects_bad_fields(bad: dict[str, object]) -> None:
    """Flap bounds must be ordered, quorums positive, keys known."""
    with pytest.raises(ValidationError):
        DecidingConfig.model_validate(bad)
