"""Flap damping: Nagios' weighted percent state change over the last 21 results. Pure.

Nagios Core keeps the last 21 states of an object, so at most 20 changes, and weighs each change
by its place in the window: the oldest possible change weighs 0.75 and the newest 1.25, linearly
in between (``low_curve_value`` / ``high_curve_value`` in ``base/flapping.c``; the page
https://assets.nagios.com/downloads/nagioscore/docs/nagioscore/3/en/flapping.html describes the
idea, the code fixes the numbers). The sum of the weights of the changes that happened, over the
20 possible, is the percent state change: 0 % for a steady object, 100 % for one that changes at
every result, 10.66 % for a single two-result outage in the middle of the window.

Flapping starts when the percentage rises above ``high`` and stops only when it falls below
``low``; in between, the previous answer stands (hysteresis), so a provider hovering around
one threshold does not make the flapping flag itself flap.

A window not yet full counts as if the oldest state filled the missing places, as Nagios does
when it seeds the history with the current state: changes are weighed by their place among the
21, and the denominator stays 20.

What a "state" is, is the caller's choice: any values compared with ``==`` (check statuses, or
just ``ok`` / ``not ok``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

#: results kept, as Nagios' ``MAX_STATE_HISTORY_ENTRIES``
WINDOW = 21
_POSSIBLE_CHANGES = WINDOW - 1
_OLDEST_WEIGHT = 0.75
_NEWEST_WEIGHT = 1.25


def change_weight(position: int) -> float:
    """The weight of a change into the state at ``position`` (1 = oldest possible, 20 = newest)."""
    if not 1 <= position <= _POSSIBLE_CHANGES:
        raise ValueError(f"a change sits at position 1..{_POSSIBLE_CHANGES}, not {position}")
    step = (_NEWEST_WEIGHT - _OLDEST_WEIGHT) / (_POSSIBLE_CHANGES - 1)
    return _OLDEST_WEIGHT + (position - 1) * step


def percent_state_change(states: Sequence[Hashable], *, but_the_newest: bool = False) -> float:
    """The weighted percent state change over the last :data:`WINDOW` of ``states`` (oldest first).

    ``but_the_newest`` leaves the newest change out: how unsettled things were before it. A
    recovery asks this (is the change that began the clean streak part of a pattern?), since
    its own change would otherwise weigh 1.25 / 20 = 6.25 % on its own.
    """
    window = list(states[-WINDOW:])
    offset = WINDOW - len(window)
    changes = [offset + i for i in range(1, len(window)) if window[i] != window[i - 1]]
    if but_the_newest:
        changes = changes[:-1]
    return sum(change_weight(position) for position in changes) * 100.0 / _POSSIBLE_CHANGES


@dataclass(frozen=True, slots=True)
class FlapThresholds:
    """Percent state change bounds: flapping starts above ``high``, stops below ``low``."""

    low: float = 5.0
    high: float = 20.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.low < self.high <= 100.0:
            raise ValueError(f"need 0 <= low < high <= 100, got low={self.low}, high={self.high}")


def is_flapping(percent: float, *, was_flapping: bool, thresholds: FlapThresholds) -> bool:
    """Whether an object is flapping now, given its percent state change and its previous answer."""
    if percent > thresholds.high:
        return True
    if percent < thresholds.low:
        return False
    return was_flapping


@dataclass(frozen=True, slots=True)
class FlapState:
    """One object's recent states and whether it is flapping; :meth:`observe` returns the next one.

    Stored with the health snapshot so a restart keeps the history.
    """

    history: tuple[Hashable, ...] = ()
    percent: float = 0.0
    flapping: bool = False

    def observe(self, state: Hashable, thresholds: FlapThresholds) -> FlapState:
        history = (*self.history, state)[-WINDOW:]
        percent = percent_state_change(history)
        flapping = is_flapping(percent, was_flapping=self.flapping, thresholds=thresholds)
        return replace(self, history=history, percent=percent, flapping=flapping)

    def started(self, previous: FlapState) -> bool:
        """This state began flapping where ``previous`` was not: the moment to tell ops, once."""
        return self.flapping and not previous.flapping

    def stopped(self, previous: FlapState) -> bool:
        return previous.flapping and not self.flapping
