"""Detection quality of the deciding core, in virtual time: false alarms, detection and recovery delay.

Pure and fast (a few seconds): simulated checks feed the real HealthTracker, nothing runs on a
socket or a clock. Two questions, for each configuration below:

1. a week with 2 % of check results randomly DOWN and no outage: how many outages are declared
   (must be zero for the recommended configuration);
2. 100 outages of random length (2 minutes to 4 hours, log-uniform): is each one detected, how
   long after it began (median, worst), and how long after it ended is recovery confirmed.

The outage ends are simulated as the provider refusing connections (checks report DOWN after
their timeout) while the controls keep working. Usage: ``python -m bench.detection [--seed N]``;
exits 1 if the recommended configuration misses an outage or declares a false one.
``--compare`` adds the alternatives (quorum 1, a lone smtp check) to show why it is recommended.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from daemon.core.assessment import CheckPolicy, Policy, Role
from daemon.core.health import HealthTracker, Thresholds
from daemon.core.model import CheckResult, CheckStatus

T0 = datetime(2026, 1, 5, tzinfo=UTC)
WEEK_S = 7 * 86400.0
NOISE = 0.02


@dataclass(frozen=True)
class Probe:
    """A simulated check: how often it runs and how long it takes to say OK or DOWN."""

    name: str
    role: Role
    every_s: float
    ok_s: tuple[float, float]
    #: a DOWN is reported when the check gives up (its timeout, or the round trip's fail_after)
    down_s: float
    weight: int = 1
    #: a vendor status page reports an incident this long after it began
    lag_s: float = 0.0

    def policy(self) -> CheckPolicy:
        return CheckPolicy(self.role, self.weight, timedelta(seconds=2 * self.every_s + self.down_s))


@dataclass(frozen=True)
class Setup:
    name: str
    probes: tuple[Probe, ...]
    quorum: int
    thresholds: Thresholds = field(default_factory=Thresholds)

    def tracker(self) -> HealthTracker:
        policy = Policy({p.name: p.policy() for p in self.probes}, quorum=self.quorum)
        return HealthTracker(self.thresholds, policy=policy)


SMTP = Probe("smtp", Role.TRIGGER, 15, (0.05, 0.5), 10)
IMAP = Probe("imap", Role.TRIGGER, 15, (0.05, 0.5), 10)
ROUNDTRIP = Probe("roundtrip", Role.TRIGGER, 60, (3, 40), 300)
STATUS = Probe("statuspage", Role.CORROBORATE, 60, (0.1, 1), 10, lag_s=900)
CONTROL = Probe("control-dns", Role.CONTROL, 30, (0.01, 0.1), 5)

RECOMMENDED = Setup("smtp+imap+roundtrip, quorum 2", (SMTP, IMAP, ROUNDTRIP, STATUS, CONTROL), quorum=2)
#: for ``--compare``: why the recommendation is what it is
ALTERNATIVES = (
    Setup("smtp+imap+roundtrip, quorum 1", (SMTP, IMAP, ROUNDTRIP, STATUS, CONTROL), quorum=1),
    Setup("smtp alone, failure_threshold 3 (the default)", (SMTP,), quorum=1),
    Setup("smtp alone, failure_threshold 4", (SMTP,), quorum=1, thresholds=Thresholds(failure=4)),
)


def results(
    setup: Setup, rng: random.Random, end_s: float, outage: tuple[float, float] | None
) -> Iterator[CheckResult]:
    """Every check result of the run in time order; each check runs again ``every`` after it reports."""
    queue = [(rng.uniform(0, p.every_s), i) for i, p in enumerate(setup.probes)]
    heapq.heapify(queue)
    pending: list[tuple[float, int, CheckResult]] = []
    while queue and queue[0][0] < end_s:
        start, i = heapq.heappop(queue)
        probe = setup.probes[i]
        done, status = _outcome(probe, rng, start, outage)
        heapq.heappush(
            pending, (done, i, CheckResult(probe.name, status, status.value, done - start, _at(done)))
        )
        heapq.heappush(queue, (max(start + probe.every_s, done), i))
        while pending and pending[0][0] <= (queue[0][0] if queue else math.inf):
            yield heapq.heappop(pending)[2]
    yield from (heapq.heappop(pending)[2] for _ in range(len(pending)))


def _outcome(
    probe: Probe, rng: random.Random, start: float, outage: tuple[float, float] | None
) -> tuple[float, CheckStatus]:
    down = outage is not None and outage[0] + probe.lag_s <= start < outage[1] + probe.lag_s
    if probe.role != Role.CONTROL and down:
        return start + probe.down_s, CheckStatus.DOWN
    if rng.random() < NOISE:
        return start + probe.down_s, CheckStatus.DOWN
    return start + rng.uniform(*probe.ok_s), CheckStatus.OK


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _seconds(at: datetime) -> float:
    return (at - T0).total_seconds()


def mode_changes(
    setup: Setup, rng: random.Random, end_s: float, outage: tuple[float, float] | None
) -> list[float]:
    """Times (s) at which routing changed side."""
    tracker, changes = setup.tracker(), []
    for result in results(setup, rng, end_s, outage):
        before = tracker.mode
        tracker.observe(result)
        if tracker.mode != before:
            changes.append(_seconds(result.at))
    return changes


@dataclass(frozen=True)
class Figures:
    false_outages: int
    missed: int
    #: mode changes beyond one failover and one recovery per outage
    extra_changes: int
    detection_s: list[float]
    recovery_s: list[float]


def measure(setup: Setup, seed: int, outages: int) -> Figures:
    rng = random.Random(seed)
    false_outages = len(mode_changes(setup, rng, WEEK_S, None)[::2])
    missed, extra, detection, recovery = 0, 0, [], []
    for _ in range(outages):
        begin = rng.uniform(600, 900)
        end = begin + math.exp(rng.uniform(math.log(120), math.log(4 * 3600)))
        changes = mode_changes(setup, rng, end + 1800, (begin, end))
        if len(changes) < 2 or not begin <= changes[0] <= end:
            missed += 1
            continue
        extra += len(changes) - 2
        detection.append(changes[0] - begin)
        recovery.append(changes[1] - end)
    return Figures(false_outages, missed, extra, detection, recovery)


def _report(setup: Setup, f: Figures) -> str:
    def stats(values: list[float]) -> str:
        return f"median {statistics.median(values):6.1f} s, worst {max(values):6.1f} s" if values else "n/a"

    return (
        f"{setup.name}\n"
        f"  a week, 2 % random check failures: {f.false_outages} outage(s) declared\n"
        f"  {len(f.detection_s) + f.missed} outages: {f.missed} missed, "
        f"{f.extra_changes} extra mode changes\n"
        f"    detected after the start:           {stats(f.detection_s)}\n"
        f"    recovery confirmed after the end:   {stats(f.recovery_s)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--outages", type=int, default=100)
    parser.add_argument("--compare", action="store_true", help="also run the alternatives (slower)")
    args = parser.parse_args()
    figures = measure(RECOMMENDED, args.seed, args.outages)
    print(_report(RECOMMENDED, figures))
    for setup in ALTERNATIVES if args.compare else ():
        print(_report(setup, measure(setup, args.seed, args.outages)))
    return 1 if figures.false_outages or figures.missed else 0


if __name__ == "__main__":
    sys.exit(main())
