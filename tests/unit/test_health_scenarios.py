"""Realistic days of a provider, fed to the tracker with virtual time, against what ops expect."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import cast

from daemon.announce import Announcer
from daemon.core.assessment import CheckPolicy, Policy, Role
from daemon.core.health import HealthTracker, Thresholds, Transition
from daemon.core.model import CheckResult, CheckStatus, ProviderState
from daemon.intake.accept import Acceptor, Submission
from daemon.store.values import Accepted

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
OK, DOWN, UNKNOWN = CheckStatus.OK, CheckStatus.DOWN, CheckStatus.UNKNOWN
MINUTE = timedelta(minutes=1)

#: as docs/deciding.md recommends: smtp and imap every 15 s, a round trip every 60 s, quorum 2, a
#: status page every 5 min that only labels, a control outside the provider every 30 s
POLICY = Policy(
    {
        "smtp": CheckPolicy(max_age=timedelta(seconds=40)),
        "imap": CheckPolicy(max_age=timedelta(seconds=40)),
        "roundtrip": CheckPolicy(max_age=timedelta(minutes=10)),
        "statuspage": CheckPolicy(Role.CORROBORATE, max_age=timedelta(minutes=11)),
        "ctl": CheckPolicy(Role.CONTROL, max_age=timedelta(seconds=65)),
    },
    quorum=2,
)

#: what a check says at round ``i`` (15 s each)
Script = Callable[[int], CheckStatus]


def day(minutes: int, scripts: dict[str, Script], start: datetime = T0) -> Iterator[CheckResult]:
    """Each check's results at its own interval, in the order they arrive."""
    every = {"roundtrip": 4, "statuspage": 20, "ctl": 2}
    for i in range(minutes * 4):
        for offset, name in enumerate(sorted(scripts)):
            if i % every.get(name, 1) == 0:
                at = start + timedelta(seconds=15 * i + offset)
                yield CheckResult(name, scripts[name](i), "scripted", 0.2, at)


def run(tracker: HealthTracker, results: Iterator[CheckResult]) -> list[Transition]:
    return [t for r in results if (t := tracker.observe(r)) is not None]


def mode_changes(transitions: list[Transition]) -> int:
    outage_side = {ProviderState.OUTAGE, ProviderState.RECOVERING, ProviderState.FLAPPING}
    sides = [t.from_state in outage_side for t in transitions] + [transitions[-1].to_state in outage_side]
    return sum(a != b for a, b in itertools.pairwise(sides))


def steady(status: CheckStatus) -> Script:
    return lambda _: status


def test_a_day_long_outage_with_submission_working_now_and_then_fails_over_once() -> None:
    """Exchange Online down all day, SMTP accepting every 5th check: one failover, no recovery."""
    tracker = HealthTracker(Thresholds(), policy=POLICY)
    smtp: Script = lambda i: OK if i % 5 == 4 else DOWN  # noqa: E731
    scripts = {"smtp": smtp, "imap": steady(DOWN), "roundtrip": steady(DOWN), "ctl": steady(OK)}
    transitions = run(tracker, day(24 * 60, scripts))
    assert tracker.mode == "outage"
    assert mode_changes(transitions) == 1
    assert len(transitions) <= 3


def test_a_slow_but_working_provider_is_no_outage() -> None:
    """Degraded (slow) results all day: mail flows, nothing declared, nothing announced."""
    tracker = HealthTracker(Thresholds(), policy=POLICY)
    scripts = {n: steady(CheckStatus.DEGRADED) for n in ("smtp", "imap", "roundtrip")}
    assert run(tracker, day(8 * 60, {**scripts, "ctl": steady(OK)})) == []
    assert tracker.state == ProviderState.HEALTHY


def test_a_vendor_incident_while_our_checks_work_declares_nothing() -> None:
    """The status API reports an incident, SMTP and IMAP work: our own evidence wins (documented)."""
    tracker = HealthTracker(Thresholds(), policy=POLICY)
    scripts = {n: steady(OK) for n in ("smtp", "imap", "roundtrip", "ctl")}
    assert run(tracker, day(4 * 60, {**scripts, "statuspage": steady(DOWN)})) == []
    assert tracker.mode == "healthy"


def test_a_renamed_check_does_not_block_recovery_after_a_restart() -> None:
    """`imap` renamed `imap-exo` across a restart: its old stored results must not be waited for."""
    renamed = Policy(
        {**{n: p for n, p in POLICY.checks.items() if n != "imap"}, "imap-exo": POLICY.of("imap")}, 2
    )
    tracker = HealthTracker(Thresholds(), policy=renamed)
    tracker.seed(day(2, {n: steady(OK) for n in ("smtp", "imap", "roundtrip", "ctl")}, T0 - 5 * MINUTE))
    down = {"smtp": steady(DOWN), "imap-exo": steady(DOWN), "roundtrip": steady(DOWN), "ctl": steady(OK)}
    run(tracker, day(30, down))
    assert tracker.mode == "outage"
    run(tracker, day(30, {n: steady(OK) for n in down}, T0 + 30 * MINUTE))
    assert tracker.state == ProviderState.HEALTHY


def test_a_removed_check_refused_login_is_not_shown_for_ever() -> None:
    """A check removed because its login was refused leaves no `credentials` state behind."""
    tracker = HealthTracker(Thresholds(), policy=POLICY)
    old = CheckResult("smtp-legacy", CheckStatus.CREDENTIALS, "535 5.7.139", 0.1, T0 - MINUTE)
    tracker.seed([old])
    run(tracker, day(10, {n: steady(OK) for n in ("smtp", "imap", "roundtrip", "ctl")}))
    assert tracker.state == ProviderState.HEALTHY


def test_our_network_stays_unknown_while_the_provider_checks_cannot_even_resolve() -> None:
    """Our uplink down: SMTP times out (DOWN) or cannot resolve (UNKNOWN) by turns, the control
    fails: one `unknown` when it starts, one transition back when the network works again."""
    policy = Policy({"smtp": CheckPolicy(max_age=timedelta(seconds=40)), "ctl": CheckPolicy(Role.CONTROL)})
    tracker = HealthTracker(Thresholds(), policy=policy)
    outage: dict[str, Script] = {"smtp": lambda i: DOWN if i % 2 else UNKNOWN, "ctl": steady(DOWN)}
    told = run(tracker, day(20, outage))
    assert tracker.state == ProviderState.UNKNOWN
    told += run(tracker, day(5, {"smtp": steady(OK), "ctl": steady(OK)}, T0 + 20 * MINUTE))
    assert [t.to_state for t in told] == [ProviderState.UNKNOWN, ProviderState.HEALTHY]
    assert tracker.mode == "healthy"


def test_failed_sends_count_after_the_wall_clock_steps_back() -> None:
    """NTP steps the clock back an hour: failed real sends count again at once, not an hour later."""
    tracker = HealthTracker(Thresholds(), policy=POLICY)
    assert tracker.observe_passive_failure(T0, "421 4.3.2 service not available") is not None
    stepped = T0 - timedelta(hours=1)
    for k in range(1, 3):
        tracker.observe_passive_failure(stepped + timedelta(seconds=10 * k), "421 4.3.2 try later")
    assert tracker.state == ProviderState.OUTAGE


class _Recording:
    """An acceptor that keeps the subjects of the announcements queued."""

    def __init__(self) -> None:
        self.subjects: list[str] = []

    async def accept(self, submissions: list[Submission]) -> list[Accepted]:
        self.subjects += [s.subject for s in submissions]
        return [Accepted(str(len(self.subjects)), duplicate=False) for _ in submissions]


async def test_an_outage_whose_checks_pass_every_few_minutes_is_announced_down_once() -> None:
    """SMTP and IMAP work for one round every 7 minutes of a 4-hour outage: each relapse from
    `recovering` is no news, so ops hear "DOWN" once, not every few minutes."""
    tracker = HealthTracker(Thresholds(), policy=POLICY)
    acceptor = _Recording()
    announcer = Announcer(cast(Acceptor, acceptor), "exo")
    flaky: Script = lambda i: OK if i % 28 == 27 else DOWN  # noqa: E731
    scripts = {"smtp": flaky, "imap": flaky, "roundtrip": steady(OK), "ctl": steady(OK)}
    for transition in run(tracker, day(4 * 60, scripts)):
        announcer.transition(transition)
    await announcer.drain()
    assert tracker.mode == "outage"
    assert acceptor.subjects == ["exo is DOWN: critical notifications now go through backup channels"]
