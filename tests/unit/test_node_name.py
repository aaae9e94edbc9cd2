"""Taking a node name (daemon/node_name.py), against a scripted store: when its holder is alive."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from daemon.node_name import Holder, NodeNameInUse, take

T0 = datetime(2026, 11, 30, 5, tzinfo=UTC)


class Scripted:
    """A store whose take_name answers from a script (None: taken)."""

    node = "relay-1"

    def __init__(self, answers: Sequence[Holder | None]) -> None:
        self.answers = list(answers)
        self.asked = 0

    async def take_name(self, instance: str, stale_s: float, dead: str | None = None) -> Holder | None:
        self.asked += 1
        return self.answers.pop(0)


def _held(instance: str, seen: float, age_s: float = 0.0) -> Holder:
    return Holder(instance, T0, T0 + timedelta(seconds=seen), age_s)


async def _take(store: Scripted) -> None:
    # a lease of a minute: a decision must come from what the holder does, not from the deadline
    await asyncio.wait_for(take(store, "me:1:x:y", stale_s=60, poll_s=0), 5)


async def test_a_holder_seen_just_after_each_refresh_is_alive() -> None:
    """Asked right after its refreshes, its age reads 0 both times: its seen_at moved, so it runs."""
    store = Scripted([_held("other:7:x:y", 0.0), _held("other:7:x:y", 2.0)])
    with pytest.raises(NodeNameInUse, match="relay-1"):
        await _take(store)
    assert store.asked == 2


async def test_a_name_given_back_while_waiting_is_taken() -> None:
    store = Scripted([_held("other:7:x:y", 0.0, 1.0), _held("", 0.0), None])
    await _take(store)
    assert store.asked == 3


async def test_a_name_another_process_took_while_waiting_is_in_use() -> None:
    store = Scripted([_held("other:7:x:y", 0.0, 5.0), _held("third:9:x:y", 9.0)])
    with pytest.raises(NodeNameInUse, match="third:9"):
        await _take(store)
