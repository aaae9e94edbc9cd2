"""Readiness's view of the store: decided from the outcomes of the process's own store calls, probed
only when those are stale, with virtual time."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import cast

import pytest

from daemon import store_health
from daemon.intake.accept import Acceptor
from daemon.store.base import Store, StoreUnavailable
from daemon.store_health import PROBE_EVERY_S, QUIET_S, Proof, StoreHealth

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FULL = StoreUnavailable("the store could not commit: database or disk is full")


class Clock:
    def __init__(self) -> None:
        self.seconds = 1000.0

    def now(self) -> datetime:
        return T0

    def monotonic(self) -> float:
        return self.seconds


class Probes:
    """The store's probe: records each call, fails while ``failure`` is set, or hangs."""

    def __init__(self) -> None:
        self.calls: list[bool] = []
        self.failure: Exception | None = None
        self.hang = False

    async def probe(self, *, commit: bool) -> None:
        self.calls.append(commit)
        if self.hang:
            await asyncio.Event().wait()
        if self.failure is not None:
            raise self.failure


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def probes() -> Probes:
    return Probes()


@pytest.fixture
def health(clock: Clock, probes: Probes) -> StoreHealth:
    return StoreHealth(probes, clock)


async def test_a_failed_accept_is_unready_until_something_commits(
    health: StoreHealth, caplog: pytest.LogCaptureFixture
) -> None:
    """A pass that reads does not end a failed commit (it succeeds on a full disk); a commit
    does. One log line when readiness turns, one when it is back, none per failure between."""
    with caplog.at_level(logging.WARNING, logger="daemon.store_health"):
        health.heard(Proof.COMMIT, FULL)
        health.heard(Proof.READ, None)
        health.heard(Proof.COMMIT, FULL)
        failing = await health.verdict()
        assert failing is not None
        assert (failing.reason, failing.proof, failing.since_at) == (str(FULL), Proof.COMMIT, T0)
        health.heard(Proof.COMMIT, None)
        assert await health.verdict() is None
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events == ["health.store_unavailable", "health.store_available"]


async def test_a_failed_pass_ends_with_a_pass_and_keeps_its_start(health: StoreHealth, clock: Clock) -> None:
    """The store unreadable (PostgreSQL down): unready until a pass reads again; each failure
    of the episode updates the reason, not the start."""
    health.heard(Proof.READ, StoreUnavailable("connection refused"))
    first = health.failing
    clock.seconds += 1
    health.heard(Proof.READ, StoreUnavailable("connection reset"))
    assert health.failing is not None and first is not None
    assert (health.failing.reason, health.failing.since) == ("connection reset", first.since)
    health.heard(Proof.READ, None)
    assert await health.verdict() is None


async def test_fresh_outcomes_answer_every_request_without_a_probe(
    health: StoreHealth, clock: Clock, probes: Probes
) -> None:
    """While the process's own calls keep telling (a pass a second), /healthz touches nothing."""
    for _ in range(100):
        clock.seconds += 0.5
        health.heard(Proof.READ, None)
        assert await health.verdict() is None
    health.heard(Proof.COMMIT, FULL)
    for _ in range(3):
        clock.seconds += PROBE_EVERY_S / 4
        health.heard(Proof.COMMIT, FULL)  # accepts still arriving, and failing
        assert await health.verdict() is not None
    assert probes.calls == []


async def test_while_failing_a_commit_probe_at_most_every_interval_however_many_ask(
    health: StoreHealth, clock: Clock, probes: Probes
) -> None:
    """Drained by the load balancer, the node hears of no accept: it tries one commit per
    interval (not one per request), and is ready once one commits."""
    health.heard(Proof.COMMIT, FULL)
    probes.failure = FULL
    clock.seconds += PROBE_EVERY_S
    verdicts = await asyncio.gather(*(health.verdict() for _ in range(20)))
    assert all(v is not None for v in verdicts)
    assert probes.calls == [True]
    clock.seconds += PROBE_EVERY_S / 2
    assert await health.verdict() is not None
    assert probes.calls == [True]
    probes.failure = None
    clock.seconds += PROBE_EVERY_S
    assert await health.verdict() is None
    assert probes.calls == [True, True]


async def test_a_quiet_store_is_read_and_found_failing(
    health: StoreHealth, clock: Clock, probes: Probes
) -> None:
    """Nothing heard of for a while (an idle intake worker): a read, which finds the database gone."""
    assert await health.verdict() is None
    assert probes.calls == []
    clock.seconds += QUIET_S
    probes.failure = StoreUnavailable("the store could not be read: connection refused")
    failing = await health.verdict()
    assert failing is not None and failing.proof is Proof.READ
    assert probes.calls == [False]


async def test_a_probe_that_hangs_is_a_failure_and_never_holds_a_request_long(
    health: StoreHealth, clock: Clock, probes: Probes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request waits a moment for the probe it started, then answers what is known; the probe,
    unanswered past its timeout, counts as a failure."""
    monkeypatch.setattr(store_health, "ANSWER_WITHIN_S", 0.01)
    monkeypatch.setattr(store_health, "PROBE_TIMEOUT_S", 0.2)
    probes.hang = True
    clock.seconds += QUIET_S
    assert await health.verdict() is None
    deadline = asyncio.get_running_loop().time() + 5
    while health.failing is None:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    assert health.failing.reason == "the store did not answer within 0.2 s"
    await health.close()


async def test_asking_before_a_message_probes_nothing_while_the_store_works(
    health: StoreHealth, clock: Clock, probes: Probes
) -> None:
    """What SMTP's MAIL FROM asks: a quiet store that works is not probed, so MAIL waits for
    nothing; once a commit failed, the verdict's commit probe finds it committing again."""
    acceptor = Acceptor(cast(Store, probes), lambda: (), clock, lambda: None, store_health=health)
    probes.hang = True
    clock.seconds += QUIET_S * 10
    assert await acceptor.store_failing() is None
    assert probes.calls == []
    probes.hang = False
    health.heard(Proof.COMMIT, FULL)
    assert await acceptor.store_failing() is not None
    clock.seconds += PROBE_EVERY_S
    assert await acceptor.store_failing() is None
    assert probes.calls == [True]
