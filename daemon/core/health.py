"""The provider's health: a pure state machine fed with rounds of check results and passive signals.

The natural state moves ``healthy → suspect → outage → recovering → healthy`` by rounds
(:mod:`daemon.core.assessment`): ``failure_threshold`` failing rounds declare an outage and
``success_threshold`` clean rounds confirm recovery, each run unbroken by contrary evidence
(neutral rounds break no streak). A failing round while recovering returns to outage.

Flap damping (:mod:`daemon.core.flapping`, over the failing / clean rounds) never starts an
outage; it keeps one from ending too soon (docs/deciding.md):

- a recovery also needs the last 21 rounds to hold no change but the one that began its clean
  streak: after one outage that is at once true, in the middle of a flapping spell it is not;
- once on the outage side, while the percent state change is above ``flap.high`` (until it falls
  below ``flap.low``), the state shows ``flapping``: routing holds the outage side and a failing
  round goes straight back to outage. Ops are told once when it starts and once when it stops.

Two more overlays never move routing: ``unknown`` (the provider looks down and so do the control
targets: our network; such rounds count neither way and passive failures are ignored, until a
control or a provider's check works again) and
``credentials`` (a check's login was refused; shown while routing is on email, until that check
authenticates again).

An operator may force a state and release it; the natural state keeps evolving underneath, so a
release lands wherever the evidence says. How a transition's cause and an explanation's lines read
is :mod:`daemon.core.health_reasons`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from daemon.core.assessment import (
    CheckView,
    Explanation,
    Policy,
    Round,
    Verdict,
    assess,
    blocking_recovery,
    our_network_down,
    view_check,
)
from daemon.core.flapping import FlapState, FlapThresholds, percent_state_change
from daemon.core.health_reasons import state_reasons, transition_cause
from daemon.core.model import CheckResult, Mode, ProviderState, mode_for

#: results kept per check for ``explain``
RECENT = 10
_OUTAGE_SIDE = frozenset({ProviderState.OUTAGE, ProviderState.RECOVERING})
_HEALTHY_SIDE = frozenset({ProviderState.HEALTHY, ProviderState.SUSPECT})
#: what a failing / clean round adds to the flapping history
_SAMPLES = {Verdict.FAILING: "failing", Verdict.CLEAN: "clean"}


@dataclass(frozen=True, slots=True)
class Transition:
    at: datetime
    from_state: ProviderState
    to_state: ProviderState
    cause: str


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """Everything the tracker must remember across a restart."""

    natural: ProviderState = ProviderState.HEALTHY
    since: datetime | None = None
    failures: int = 0
    successes: int = 0
    forced: ProviderState | None = None
    forced_reason: str | None = None
    #: when the override in force began
    forced_at: datetime | None = None
    last_passive_at: datetime | None = None
    #: the last round blamed our own network
    local: bool = False
    #: checks whose latest result refused our credentials
    credentials: tuple[str, ...] = ()
    #: failing / clean rounds, for the percent state change
    flap: FlapState = field(default_factory=FlapState)
    #: routing is held on the outage side while the rounds flap
    held: bool = False

    @property
    def state_since(self) -> datetime | None:
        """Since when the state in force holds: the override's start while one is in force."""
        return self.forced_at if self.forced is not None and self.forced_at is not None else self.since

    @property
    def routing_state(self) -> ProviderState:
        """The natural state, or ``flapping`` while that holds routing on the outage side."""
        return ProviderState.FLAPPING if self.held else self.natural

    @property
    def mode(self) -> Mode:
        return mode_for(self.forced, self._natural_mode) if self.forced else self._natural_mode

    @property
    def _natural_mode(self) -> Mode:
        return mode_for(self.routing_state)

    @property
    def state(self) -> ProviderState:
        if self.forced:
            return self.forced
        if self.local:
            return ProviderState.UNKNOWN
        if self.credentials and self._natural_mode == "healthy":
            return ProviderState.CREDENTIALS
        return self.routing_state


@dataclass(frozen=True, slots=True)
class Thresholds:
    failure: int = 3
    success: int = 3
    #: real-send failures count at most once per this period, so one burst of failed sends
    #: during a network blip is one failure, not ``failure_threshold`` of them
    passive_min_interval: timedelta = timedelta(seconds=5)
    flap: FlapThresholds = field(default_factory=FlapThresholds)

    def __post_init__(self) -> None:
        if self.failure < 1 or self.success < 1:
            raise ValueError("thresholds must be at least 1")


class HealthTracker:
    def __init__(
        self, thresholds: Thresholds, snapshot: HealthSnapshot | None = None, policy: Policy | None = None
    ) -> None:
        self.thresholds = thresholds
        self.snapshot = snapshot or HealthSnapshot()
        self.policy = policy or Policy()
        self.last_round: Round | None = None
        self._recent: dict[str, tuple[CheckResult, ...]] = {}

    @property
    def state(self) -> ProviderState:
        return self.snapshot.state

    @property
    def mode(self) -> Mode:
        """The side of the routes in force: use this, not ``mode_for(state)``, which cannot see overlays."""
        return self.snapshot.mode

    @property
    def recent(self) -> dict[str, tuple[CheckResult, ...]]:
        """Each check's last :data:`RECENT` results, oldest first."""
        return dict(self._recent)

    def seed(self, results: Iterable[CheckResult]) -> None:
        """Remember results (e.g. stored before a restart) without counting any round.

        Those of a check the policy does not know (removed or renamed since) are dropped: stale
        for good, such a check would be waited for by every recovery, or its refused login show
        ``credentials``, for ever.
        """
        for result in sorted((r for r in results if self.policy.knows(r.check)), key=lambda r: r.at):
            self._remember(result)

    def observe(self, result: CheckResult, now: datetime | None = None) -> Transition | None:
        """Feed one check result; the round it completes may cause a transition.

        ``now`` defaults to the result's time; pass the clock when results may arrive late.
        """
        self._remember(result)
        latest = {name: results[-1] for name, results in self._recent.items()}
        return self.observe_round(assess(self.policy, latest, result, now or result.at))

    def observe_round(self, round_: Round) -> Transition | None:
        if self.snapshot.local and round_.verdict != Verdict.LOCAL and self._network_down(round_.at):
            # our network stays the explanation until a control or a provider's check works again:
            # a provider's check reading unknown (cannot resolve) between two down is no news
            round_ = replace(round_, verdict=Verdict.LOCAL)
        self.last_round = round_
        sample = _SAMPLES.get(round_.verdict)
        flap = self.snapshot.flap
        flap = flap if sample is None else flap.observe(sample, self.thresholds.flap)
        local = round_.verdict == Verdict.LOCAL
        s = replace(self.snapshot, flap=flap, local=local, credentials=round_.credentials)
        return self._apply(self._count(s, round_.verdict), round_.at, round_.cause)

    def observe_passive_failure(self, at: datetime, reason: str) -> Transition | None:
        """A real send through the provider failed in a way that implicates the provider.

        Ignored while the controls say our own network is down (the last round's verdict, or their
        fresh results alone: with the provider's checks reading UNKNOWN no round is LOCAL): that
        explains the failure.
        """
        last = self.snapshot.last_passive_at
        # a wall clock stepped back (NTP) must not silence failed sends until it catches up
        too_soon = last is not None and timedelta(0) <= at - last < self.thresholds.passive_min_interval
        if self.snapshot.local or too_soon:
            return None
        if self._network_down(at):
            return None
        self.snapshot = replace(self.snapshot, last_passive_at=at)
        return self._apply(self._after_failure(self.snapshot), at, f"send failed: {reason}")

    def force(self, state: ProviderState, at: datetime, reason: str) -> Transition | None:
        before = self.snapshot.state
        self.snapshot = replace(self.snapshot, forced=state, forced_reason=reason, forced_at=at)
        return self._transition(before, at, f"forced by operator: {reason}")

    def release(self, at: datetime) -> Transition | None:
        before = self.snapshot.state
        self.snapshot = replace(self.snapshot, forced=None, forced_reason=None, forced_at=None)
        return self._transition(before, at, "operator override released")

    def explain(self, now: datetime) -> Explanation:
        """Why the state is what it is, and what each check said lately."""
        names = sorted({*self.policy.checks, *self._recent})
        checks = tuple(view_check(self.policy, n, self._recent.get(n, ()), now) for n in names)
        why = state_reasons(self.snapshot, self.thresholds, self._waiting(checks))
        return Explanation(
            at=now,
            state=self.state,
            mode=self.mode,
            since=self.snapshot.state_since,
            why=(*why, *self._last_round_line()),
            flap_percent=self.snapshot.flap.percent,
            checks=checks,
        )

    def _waiting(self, checks: tuple[CheckView, ...]) -> str:
        """The checks a recovery waits for, named only while on the outage side."""
        return blocking_recovery(checks) if self.snapshot.natural in _OUTAGE_SIDE else ""

    def _last_round_line(self) -> tuple[str, ...]:
        r = self.last_round
        return () if r is None else (f"last round ({r.verdict.value}): {r.cause}",)

    def _network_down(self, at: datetime) -> bool:
        return our_network_down(self.policy, {name: r[-1] for name, r in self._recent.items()}, at)

    def _remember(self, result: CheckResult) -> None:
        self._recent[result.check] = (*self._recent.get(result.check, ()), result)[-RECENT:]

    def _count(self, s: HealthSnapshot, verdict: Verdict) -> HealthSnapshot:
        if verdict == Verdict.FAILING:
            return self._after_failure(s)
        if verdict == Verdict.CLEAN:
            return self._after_success(s)
        if verdict == Verdict.BELOW_QUORUM and s.natural in _HEALTHY_SIDE:
            return replace(s, natural=ProviderState.HEALTHY, failures=0)
        if verdict == Verdict.UNCONFIRMED and s.natural in _OUTAGE_SIDE:
            return replace(s, natural=ProviderState.OUTAGE, successes=0)
        if verdict == Verdict.UNCONFIRMED:
            return replace(s, successes=0)
        return s

    def _after_failure(self, s: HealthSnapshot) -> HealthSnapshot:
        # under a flapping hold, routing is already on the outage side: one failure is enough
        if s.natural in _OUTAGE_SIDE or s.held:
            return replace(s, natural=ProviderState.OUTAGE, failures=s.failures + 1, successes=0)
        failures = s.failures + 1
        natural = ProviderState.OUTAGE if failures >= self.thresholds.failure else ProviderState.SUSPECT
        return replace(s, natural=natural, failures=failures, successes=0)

    def _after_success(self, s: HealthSnapshot) -> HealthSnapshot:
        if s.natural in _HEALTHY_SIDE:
            return replace(s, natural=ProviderState.HEALTHY, failures=0, successes=s.successes + 1)
        successes = s.successes + 1
        recovered = successes >= self.thresholds.success and self._settled(s)
        natural = ProviderState.HEALTHY if recovered else ProviderState.RECOVERING
        return replace(s, natural=natural, successes=successes, failures=0)

    def _settled(self, s: HealthSnapshot) -> bool:
        """Whether the window holds no change but the one that began this clean streak.

        One outage that has ended is settled; a provider that came back in the middle of a
        flapping spell is not, so it does not fail back only to fail over again a minute later.
        """
        return percent_state_change(s.flap.history, but_the_newest=True) == 0.0

    def _apply(self, after: HealthSnapshot, at: datetime, cause: str) -> Transition | None:
        prev = self.snapshot
        # a hold starts only on the outage side, so flapping never declares an outage by itself
        held = after.flap.flapping and (after.held or after.natural in _OUTAGE_SIDE)
        after = replace(after, held=held) if held != after.held else after
        changed = after.routing_state != prev.routing_state or after.state != prev.state
        self.snapshot = replace(after, since=at) if changed else after
        reason = transition_cause(prev, self.snapshot, self.thresholds, self._recent, cause)
        return self._transition(prev.state, at, reason)

    def _transition(self, before: ProviderState, at: datetime, cause: str) -> Transition | None:
        after = self.snapshot.state
        if after == before:
            return None
        return Transition(at=at, from_state=before, to_state=after, cause=cause)
