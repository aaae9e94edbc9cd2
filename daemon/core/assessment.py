"""Deciding what one round of check results says about the provider. Pure: ``now`` is passed in.

Every check has a role (docs/deciding.md):

- ``trigger``: the daemon's own evidence (smtp, imap, roundtrip). Its DOWN counts towards the
  quorum, and, since a check that can declare an outage must be able to veto its end, it must
  also be OK for a recovery.
- ``confirm``: must be OK for a recovery, never counts towards an outage (a slow round trip that
  should prove mail flows again without being trusted to declare it broken).
- ``corroborate``: the vendor's status page. It labels an outage and, if the policy asks, must not
  be DOWN for a recovery; it never triggers failover, because status pages lag real outages.
- ``control``: a target outside the provider (a TCP endpoint, a control mailbox elsewhere). When
  the provider looks down and the controls fail too, the trouble is our own network.

A round is evaluated whenever a result arrives, over each check's latest result no older than
its ``max_age``. It counts as *failing* when the trigger weight DOWN reaches the quorum and the
arriving result is itself a trigger DOWN, and as *clean* when every confirming check is OK and
the arriving result is one of them. Requiring fresh evidence in the arriving result is what
stops one DOWN from being counted again each time another check reports while it is still the
latest. Between the two, fresh evidence still breaks streaks, so "consecutive" means what it
says: a working trigger while the quorum is not down is *below quorum* (ends a failing streak),
a DOWN short of the quorum is *unconfirmed* (ends a clean streak). Anything else (unknown,
credentials, status pages, controls) is *neutral* and breaks no streak.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from daemon.core.model import CheckResult, CheckStatus, Mode, ProviderState


class Role(enum.StrEnum):
    TRIGGER = "trigger"
    CONFIRM = "confirm"
    CORROBORATE = "corroborate"
    CONTROL = "control"


_CONFIRMING = frozenset({Role.TRIGGER, Role.CONFIRM})
_WORKING = frozenset({CheckStatus.OK, CheckStatus.DEGRADED})
_EVIDENCE = _WORKING | {CheckStatus.DOWN}


@dataclass(frozen=True, slots=True)
class CheckPolicy:
    role: Role = Role.TRIGGER
    weight: int = 1
    #: an older latest result no longer counts (None: the policy's ``default_max_age``)
    max_age: timedelta | None = None

    def __post_init__(self) -> None:
        if self.weight < 1:
            raise ValueError(f"a check's weight is at least 1, not {self.weight}")


@dataclass(frozen=True, slots=True)
class Policy:
    """Roles and weights per check; a check it does not name is a trigger of weight 1."""

    checks: Mapping[str, CheckPolicy] = field(default_factory=dict)
    #: trigger weight that must be DOWN in one round for it to fail
    quorum: int = 1
    #: control weight that must be DOWN to blame our own network (None: every control)
    control_quorum: int | None = None
    #: a corroborating check that is DOWN (the vendor still reports an incident) blocks recovery
    require_corroboration: bool = False
    default_max_age: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if self.quorum < 1 or (self.control_quorum is not None and self.control_quorum < 1):
            raise ValueError("quorums are at least 1")

    def of(self, check: str) -> CheckPolicy:
        return self.checks.get(check) or _DEFAULT_CHECK

    def max_age(self, check: str) -> timedelta:
        return self.of(check).max_age or self.default_max_age

    def knows(self, check: str) -> bool:
        """Whether ``check`` counts: a policy that names its checks (a configured one names every
        check) knows no other, such as one removed or renamed since its results were stored."""
        return not self.checks or check in self.checks

    def named(self, role: Role) -> tuple[str, ...]:
        return tuple(name for name, p in self.checks.items() if p.role == role)

    @property
    def needed_controls(self) -> int:
        total = sum(self.of(name).weight for name in self.named(Role.CONTROL))
        return total if self.control_quorum is None else self.control_quorum


_DEFAULT_CHECK = CheckPolicy()


class Verdict(enum.StrEnum):
    #: the quorum is down and the arriving result is a trigger DOWN: counts towards an outage
    FAILING = "failing"
    #: every confirming check is OK and the arriving result is one of them: counts towards recovery
    CLEAN = "clean"
    #: a working trigger or confirm result while the quorum is not down: breaks a failing streak
    BELOW_QUORUM = "below_quorum"
    #: a DOWN that does not reach the quorum: breaks a clean streak
    UNCONFIRMED = "unconfirmed"
    #: nothing new about the provider (unknown, credentials, a status page, a control)
    NEUTRAL = "neutral"
    #: the provider looks down and so do the controls: our network, not the provider
    LOCAL = "local"


@dataclass(frozen=True, slots=True)
class Round:
    at: datetime
    verdict: Verdict
    #: one line saying why, shown in transitions and ``explain``
    cause: str
    #: checks whose latest result is a refusal of our credentials, whatever its age
    credentials: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Evidence:
    """The fresh latest results of one round, sorted by what they say."""

    down: tuple[CheckResult, ...]
    down_weight: int
    controls_down: tuple[CheckResult, ...]
    waiting: tuple[str, ...]
    vendor_down: tuple[CheckResult, ...]


def assess(policy: Policy, latest: Mapping[str, CheckResult], arriving: CheckResult, now: datetime) -> Round:
    """The round that ``arriving`` completes, given every check's latest result (``arriving`` included)."""
    fresh = {n: r for n, r in latest.items() if now - r.at <= policy.max_age(n)}
    evidence = _evidence(policy, latest, fresh)
    credentials = tuple(sorted(n for n, r in latest.items() if r.status == CheckStatus.CREDENTIALS))
    verdict, cause = _verdict(policy, evidence, arriving)
    return Round(at=now, verdict=verdict, cause=cause, credentials=credentials)


def own_network_fails(results: Iterable[CheckResult], policy: Policy) -> bool:
    """Whether the controls among ``results`` fail, as much control weight as the policy needs to
    blame our own network: failures beside them are our network's, not the provider's."""
    down = [r for r in results if r.status == CheckStatus.DOWN and policy.of(r.check).role == Role.CONTROL]
    return bool(down) and sum(policy.of(r.check).weight for r in down) >= policy.needed_controls


def our_network_down(policy: Policy, latest: Mapping[str, CheckResult], now: datetime) -> bool:
    """Whether the fresh results say our own network is down: the controls fail, and none of the
    provider's checks reads working (they may read UNKNOWN, as a name that does not resolve does,
    and so never make a LOCAL round). A real send that failed meanwhile says nothing of the
    provider; one that failed while a provider's check reads working (a dead control host) does."""
    fresh = [r for n, r in latest.items() if now - r.at <= policy.max_age(n)]
    reached = any(r.status in _WORKING and policy.of(r.check).role in _CONFIRMING for r in fresh)
    return not reached and own_network_fails(fresh, policy)


def _evidence(
    policy: Policy, latest: Mapping[str, CheckResult], fresh: Mapping[str, CheckResult]
) -> _Evidence:
    down: dict[Role, list[CheckResult]] = {role: [] for role in Role}
    ok = set()
    for name, result in sorted(fresh.items()):
        if result.status == CheckStatus.DOWN:
            down[policy.of(name).role].append(result)
        elif result.status in _WORKING:
            ok.add(name)
    # a named check that never reported is waited for as much as one whose result went stale
    confirming = {n for n in (*policy.checks, *latest) if policy.of(n).role in _CONFIRMING}
    return _Evidence(
        down=tuple(down[Role.TRIGGER]),
        down_weight=sum(policy.of(r.check).weight for r in down[Role.TRIGGER]),
        controls_down=tuple(down[Role.CONTROL]),
        waiting=tuple(sorted(confirming - ok)),
        vendor_down=tuple(down[Role.CORROBORATE]),
    )


def _verdict(policy: Policy, e: _Evidence, arriving: CheckResult) -> tuple[Verdict, str]:
    role = policy.of(arriving.check).role
    provider_down = e.down_weight >= policy.quorum
    if provider_down and own_network_fails(e.controls_down, policy):
        return Verdict.LOCAL, f"{_names(e.down)} down and controls {_names(e.controls_down)} down too"
    if role not in _CONFIRMING or arriving.status not in _EVIDENCE:
        return Verdict.NEUTRAL, f"{_line(arriving)} ({role.value}): counts neither way"
    if arriving.status == CheckStatus.DOWN:
        if provider_down and role == Role.TRIGGER:
            return Verdict.FAILING, _failing_cause(policy, e, arriving)
        return Verdict.UNCONFIRMED, f"{_line(arriving)}: below quorum {policy.quorum}, but not clean"
    if not e.waiting and not (policy.require_corroboration and e.vendor_down):
        return Verdict.CLEAN, f"every confirming check ok; last: {_line(arriving)}"
    if provider_down:
        return Verdict.NEUTRAL, f"{_names(e.down)} still down (quorum {policy.quorum}); {_line(arriving)}"
    return Verdict.BELOW_QUORUM, _below_quorum_cause(policy, e, arriving)


def _failing_cause(policy: Policy, e: _Evidence, arriving: CheckResult) -> str:
    cause = f"{_names(e.down)} down (weight {e.down_weight}, quorum {policy.quorum}); {_line(arriving)}"
    if e.vendor_down:
        cause += f"; the vendor agrees: {'; '.join(_line(r) for r in e.vendor_down)}"
    return cause


def _below_quorum_cause(policy: Policy, e: _Evidence, arriving: CheckResult) -> str:
    if e.down:
        return (
            f"{_names(e.down)} down (weight {e.down_weight}) below quorum {policy.quorum}; {_line(arriving)}"
        )
    if e.waiting:
        return f"waiting for {', '.join(e.waiting)} to be ok; {_line(arriving)}"
    return f"the vendor still reports trouble: {'; '.join(_line(r) for r in e.vendor_down)}"


def _names(results: tuple[CheckResult, ...]) -> str:
    return ", ".join(r.check for r in results)


def _line(result: CheckResult) -> str:
    return f"{result.check}: {result.status.value}: {result.reason}"


# --- explaining a check -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckView:
    """One check as ``explain`` shows it: its role, its latest result and its recent statuses."""

    name: str
    role: Role
    weight: int
    latest: CheckResult | None
    fresh: bool
    #: oldest first
    recent: tuple[CheckResult, ...]
    note: str


def view_check(policy: Policy, name: str, recent: tuple[CheckResult, ...], now: datetime) -> CheckView:
    p, latest = policy.of(name), (recent[-1] if recent else None)
    fresh = latest is not None and now - latest.at <= policy.max_age(name)
    return CheckView(name, p.role, p.weight, latest, fresh, recent, _note(policy, name, latest, fresh))


def _note(policy: Policy, name: str, latest: CheckResult | None, fresh: bool) -> str:
    role = policy.of(name).role
    if latest is None:
        return "no result yet" + (": recovery waits for it" if role in _CONFIRMING else "")
    if not fresh:
        return f"latest result older than {policy.max_age(name)}: it does not count"
    if latest.status == CheckStatus.CREDENTIALS:
        return "credentials refused: renew them"
    if latest.status == CheckStatus.UNKNOWN:
        return "unknown: counts neither way" + (" and recovery waits for it" if role in _CONFIRMING else "")
    down, working = _ROLE_NOTES[role]
    return down if latest.status == CheckStatus.DOWN else working


#: per role, what a DOWN and what an OK (or degraded) result means
_ROLE_NOTES: Mapping[Role, tuple[str, str]] = {
    Role.TRIGGER: ("counts towards the quorum", "allows recovery"),
    Role.CONFIRM: ("blocks recovery (never triggers)", "allows recovery"),
    Role.CORROBORATE: ("labels the outage (never triggers)", "no incident reported"),
    Role.CONTROL: ("our network may be at fault", "our network works"),
}


def blocking_recovery(checks: tuple[CheckView, ...]) -> str:
    """The confirming checks not yet fresh and OK, each with what it lacks ('' when none)."""
    return ", ".join(
        f"{c.name} ({c.latest.status.value if c.fresh and c.latest else c.note})"
        for c in checks
        if c.role in _CONFIRMING and not (c.fresh and c.latest is not None and c.latest.status in _WORKING)
    )


@dataclass(frozen=True, slots=True)
class Explanation:
    """What ``backchannel status`` and ``GET /v1/status`` show: the state, why, and each check."""

    at: datetime
    state: ProviderState
    mode: Mode
    since: datetime | None
    why: tuple[str, ...]
    flap_percent: float
    checks: tuple[CheckView, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": _iso(self.at),
            "state": self.state.value,
            "mode": self.mode,
            "since": _iso(self.since),
            "why": list(self.why),
            "flap_percent": round(self.flap_percent, 2),
            "checks": [_check_dict(c) for c in self.checks],
        }


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat().replace("+00:00", "Z")


def _check_dict(c: CheckView) -> dict[str, Any]:
    latest = c.latest
    return {
        "name": c.name,
        "role": c.role.value,
        "weight": c.weight,
        "fresh": c.fresh,
        "note": c.note,
        "latest": None
        if latest is None
        else {
            "status": latest.status.value,
            "reason": latest.reason,
            "latency_s": latest.latency_s,
            "at": _iso(latest.at),
        },
        "recent": [{"at": _iso(r.at), "status": r.status.value} for r in c.recent],
    }
