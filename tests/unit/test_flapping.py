"""Flap damping: Nagios' weighted percent state change, its hysteresis, and a flapping provider."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from daemon.core.flapping import (
    WINDOW,
    FlapState,
    FlapThresholds,
    change_weight,
    is_flapping,
    percent_state_change,
)
from daemon.core.health import HealthTracker, Thresholds
from daemon.core.model import CheckResult, CheckStatus, ProviderState

DEFAULT = FlapThresholds()


def one_outage() -> list[str]:
    """21 results: ok, a two-result outage in the middle, ok again (Nagios' 10.66 % vector)."""
    return ["ok"] * 12 + ["down"] * 2 + ["ok"] * 7


def alternating(n: int = WINDOW) -> list[str]:
    return ["ok" if i % 2 == 0 else "down" for i in range(n)]


def test_weights_run_from_three_quarters_to_five_quarters() -> None:
    """The oldest possible change weighs 0.75, the newest 1.25, linearly between (flapping.c)."""
    assert change_weight(1) == pytest.approx(0.75)
    assert change_weight(20) == pytest.approx(1.25)
    assert change_weight(11) - change_weight(10) == pytest.approx(0.5 / 19)


def test_one_outage_then_recovery_is_about_ten_point_six_six_percent() -> None:
    """One outage and its recovery in the window give 10.66 %: not flapping."""
    percent = percent_state_change(one_outage())
    assert percent == pytest.approx(10.66, abs=0.005)
    assert not is_flapping(percent, was_flapping=False, thresholds=DEFAULT)


def test_alternating_states_are_one_hundred_percent() -> None:
    """A state change at every result is 100 %: flapping."""
    percent = percent_state_change(alternating())
    assert percent == pytest.approx(100.0)
    assert is_flapping(percent, was_flapping=False, thresholds=DEFAULT)


def test_steady_state_is_zero_percent() -> None:
    """No change, no percent."""
    assert percent_state_change(["ok"] * 30) == 0.0
    assert percent_state_change([]) == 0.0


def test_newer_changes_weigh_more_than_older_ones() -> None:
    """The same outage counts more near the end of the window than near its start."""
    early = ["down"] + ["ok"] * 20
    late = ["ok"] * 20 + ["down"]
    assert percent_state_change(early) == pytest.approx(0.75 * 100 / 20)
    assert percent_state_change(late) == pytest.approx(1.25 * 100 / 20)


def test_only_the_last_twenty_one_results_count() -> None:
    """Changes older than the window are forgotten."""
    assert percent_state_change(alternating(40) + ["ok"] * 21) == 0.0
    assert percent_state_change(["x", "y"] + ["ok"] * 21) == 0.0


def test_a_short_history_is_weighed_as_the_newest_part_of_the_window() -> None:
    """Fewer than 21 results count as if the oldest filled the window, denominator 20."""
    assert percent_state_change(["ok", "down"]) == pytest.approx(1.25 * 100 / 20)
    assert percent_state_change(["ok", "down", "ok"]) == pytest.approx((change_weight(19) + 1.25) * 5)


def test_flapping_starts_only_above_high() -> None:
    """At the high threshold nothing changes; above it, flapping starts."""
    assert not is_flapping(20.0, was_flapping=False, thresholds=DEFAULT)
    assert is_flapping(20.01, was_flapping=False, thresholds=DEFAULT)


def test_flapping_stops_only_below_low() -> None:
    """Between the thresholds a flapping object stays flapping; below low it stops."""
    assert is_flapping(10.0, was_flapping=True, thresholds=DEFAULT)
    assert is_flapping(5.0, was_flapping=True, thresholds=DEFAULT)
    assert not is_flapping(4.99, was_flapping=True, thresholds=DEFAULT)
    assert not is_flapping(10.0, was_flapping=False, thresholds=DEFAULT)


@pytest.mark.parametrize(("low", "high"), [(20.0, 5.0), (10.0, 10.0), (-1.0, 20.0), (5.0, 101.0)])
def test_thresholds_must_be_ordered_percentages(low: float, high: float) -> None:
    """low < high, both within 0..100."""
    with pytest.raises(ValueError, match="low < high"):
        FlapThresholds(low=low, high=high)


def test_flap_state_starts_once_and_stops_after_calm() -> None:
    """Fed a flapping then steady provider, the state starts flapping once and stops once."""
    state = FlapState()
    starts = stops = 0
    for status in alternating(12) + ["ok"] * 40:
        previous, state = state, state.observe(status, DEFAULT)
        starts += state.started(previous)
        stops += state.stopped(previous)
    assert (starts, stops) == (1, 1)
    assert not state.flapping
    assert len(state.history) == WINDOW


def test_flap_state_holds_between_thresholds() -> None:
    """After flapping starts, a percentage between low and high keeps it flapping."""
    state = FlapState()
    for status in alternating(8):
        state = state.observe(status, DEFAULT)
    assert state.flapping
    while state.percent > DEFAULT.high:
        state = state.observe("down", DEFAULT)
    assert state.percent > DEFAULT.low
    assert state.flapping


def test_but_the_newest_leaves_the_newest_change_out() -> None:
    """How unsettled things were before the newest change: zero after one steady outage."""
    assert percent_state_change(["down"] * 15 + ["ok"] * 6, but_the_newest=True) == 0.0
    relapse = ["down"] * 15 + ["ok", "down"] + ["ok"] * 4
    assert percent_state_change(relapse, but_the_newest=True) == pytest.approx(
        (change_weight(15) + change_weight(16)) * 5
    )


# --- a flapping provider, through the health tracker ------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY_ROUNDS = 24 * 60 * 4  # a round every 15 s


def spells(rng: random.Random, longest: int) -> Iterator[CheckStatus]:
    """Down and up in turn, each spell 1..``longest`` rounds (15 s to ``longest`` x 15 s)."""
    down = False
    while True:
        yield from [CheckStatus.DOWN if down else CheckStatus.OK] * rng.randint(1, longest)
        down = not down


def coin(rng: random.Random, _: int) -> Iterator[CheckStatus]:
    """Every round down with probability 1/2: a provider that works half of the time."""
    while True:
        yield CheckStatus.DOWN if rng.random() < 0.5 else CheckStatus.OK


@dataclass
class Day:
    failovers: int = 0
    failbacks: int = 0
    flapping_told: int = 0
    calm_told: int = 0


def live(
    tracker: HealthTracker, statuses: Iterator[CheckStatus], rounds: int, day: Day, start: int = 0
) -> None:
    for i in range(start, start + rounds):
        before = tracker.mode
        at = T0 + timedelta(seconds=15 * i)
        transition = tracker.observe(CheckResult("smtp", next(statuses), "sim", 0.1, at))
        day.failovers += (before, tracker.mode) == ("healthy", "outage")
        day.failbacks += (before, tracker.mode) == ("outage", "healthy")
        if transition is not None:
            day.flapping_told += transition.to_state == ProviderState.FLAPPING
            day.calm_told += transition.from_state == ProviderState.FLAPPING


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(("provider", "longest"), [(spells, 8), (spells, 3), (coin, 0)])
def test_a_flapping_provider_over_a_virtual_day_fails_over_at_most_once(
    provider: Callable[[random.Random, int], Iterator[CheckStatus]], longest: int, seed: int
) -> None:
    """A day of flapping (spells up to 2 minutes, or a coin toss per round) fails over once,
    tells ops once that flapping started and once that it stopped, and fails back once calm."""
    tracker, day = HealthTracker(Thresholds(failure=3, success=3)), Day()
    live(tracker, provider(random.Random(seed), longest), DAY_ROUNDS, day)
    assert (day.failovers, day.failbacks) == (1, 0)
    assert tracker.state == ProviderState.FLAPPING
    live(tracker, iter(lambda: CheckStatus.OK, None), 60, day, start=DAY_ROUNDS)
    assert (day.failovers, day.failbacks, day.flapping_told, day.calm_told) == (1, 1, 1, 1)
    assert tracker.state == ProviderState.HEALTHY


def test_flapping_alone_never_declares_an_outage() -> None:
    """Alternating rounds are 100 % flapping, but never failure_threshold failing rounds: no failover."""
    tracker, day = HealthTracker(Thresholds(failure=3, success=3)), Day()
    live(tracker, (CheckStatus.DOWN if i % 2 else CheckStatus.OK for i in range(1000)), 1000, day)
    assert day.failovers == 0
    assert tracker.snapshot.flap.flapping
    assert tracker.mode == "healthy"
