"""The provider's health: a pure state machine fed with check results and passive signals.

``healthy → suspect → outage → recovering → healthy``. Entering outage needs
``failure_threshold`` consecutive failures; leaving it needs ``success_threshold``
consecutive successes. A success while suspect returns to healthy; a failure while recovering
returns to outage. An operator may force a state and release it; the natural state keeps
evolving underneath, so a release lands wherever the evidence says.

Results that say nothing about whether mail flows (``unknown``, ``credentials``) neither count
as failures nor as successes: they do not break a streak either way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from daemon.core.model import CheckResult, CheckStatus, ProviderState

_FAILURES = frozenset({CheckStatus.DOWN})
_SUCCESSES = frozenset({CheckStatus.OK, CheckStatus.DEGRADED})


@dataclass(frozen=True, slots=True)
class Transition:
    at: datetime
    from_state: ProviderState
    to_state: ProviderState
    cause: str


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """Everything the tracker knows; stored so a restart resumes where it was."""

    natural: ProviderState = ProviderState.HEALTHY
    since: datetime | None = None
    failures: int = 0
    successes: int = 0
    forced: ProviderState | None = None
    forced_reason: str | None = None
    last_passive_at: datetime | None = None

    @property
    def state(self) -> ProviderState:
        return self.forced or self.natural


@dataclass(frozen=True, slots=True)
class Thresholds:
    failure: int = 3
    success: int = 3
    #: real-send failures count at most once per this period, so one burst of failed sends
    #: during a network blip is one failure, not ``failure_threshold`` of them
    passive_min_interval: timedelta = timedelta(seconds=5)

    def __post_init__(self) -> None:
        if self.failure < 1 or self.success < 1:
            raise ValueError("thresholds must be at least 1")


class HealthTracker:
    def __init__(self, thresholds: Thresholds, snapshot: HealthSnapshot | None = None) -> None:
        self.thresholds = thresholds
        self.snapshot = snapshot or HealthSnapshot()

    @property
    def state(self) -> ProviderState:
        return self.snapshot.state

    def observe(self, result: CheckResult) -> Transition | None:
        """Feed one check result; returns the transition it caused, if any."""
        cause = f"{result.check}: {result.status.value}: {result.reason}"
        if result.status in _FAILURES:
            return self._apply(self._after_failure(), result.at, cause)
        if result.status in _SUCCESSES:
            return self._apply(self._after_success(), result.at, cause)
        return None

    def observe_passive_failure(self, at: datetime, reason: str) -> Transition | None:
        """A real send through the provider failed in a way that implicates the provider."""
        last = self.snapshot.last_passive_at
        if last is not None and at - last < self.thresholds.passive_min_interval:
            return None
        self.snapshot = replace(self.snapshot, last_passive_at=at)
        return self._apply(self._after_failure(), at, f"send failed: {reason}")

    def force(self, state: ProviderState, at: datetime, reason: str) -> Transition | None:
        before = self.snapshot.state
        self.snapshot = replace(self.snapshot, forced=state, forced_reason=reason)
        return self._transition(before, at, f"forced by operator: {reason}")

    def release(self, at: datetime) -> Transition | None:
        before = self.snapshot.state
        self.snapshot = replace(self.snapshot, forced=None, forced_reason=None)
        return self._transition(before, at, "operator override released")

    def _after_failure(self) -> HealthSnapshot:
        s, threshold = self.snapshot, self.thresholds.failure
        if s.natural in (ProviderState.OUTAGE, ProviderState.RECOVERING):
            return replace(s, natural=ProviderState.OUTAGE, failures=s.failures + 1, successes=0)
        failures = s.failures + 1
        natural = ProviderState.OUTAGE if failures >= threshold else ProviderState.SUSPECT
        return replace(s, natural=natural, failures=failures, successes=0)

    def _after_success(self) -> HealthSnapshot:
        s, threshold = self.snapshot, self.thresholds.success
        if s.natural in (ProviderState.HEALTHY, ProviderState.SUSPECT):
            return replace(s, natural=ProviderState.HEALTHY, failures=0, successes=s.successes + 1)
        successes = s.successes + 1
        natural = ProviderState.HEALTHY if successes >= threshold else ProviderState.RECOVERING
        return replace(s, natural=natural, successes=successes, failures=0)

    def _apply(self, after: HealthSnapshot, at: datetime, cause: str) -> Transition | None:
        before = self.snapshot.state
        changed = after.natural != self.snapshot.natural
        self.snapshot = replace(after, since=at) if changed else after
        return self._transition(before, at, self._explain(cause))

    def _explain(self, cause: str) -> str:
        s = self.snapshot
        if s.natural == ProviderState.OUTAGE and s.failures == self.thresholds.failure:
            return f"{s.failures} consecutive failures; last: {cause}"
        if s.natural == ProviderState.HEALTHY and s.successes == self.thresholds.success:
            return f"{s.successes} consecutive successes; last: {cause}"
        return cause

    def _transition(self, before: ProviderState, at: datetime, cause: str) -> Transition | None:
        after = self.snapshot.state
        if after == before:
            return None
        return Transition(at=at, from_state=before, to_state=after, cause=cause)
