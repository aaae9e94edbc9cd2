"""The collector's settings for a long-running process (daemon.heap)."""

from __future__ import annotations

import gc
import weakref

from daemon import heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_settle_freezes_what_exists_and_spaces_young_collections() -> None:
    heap.settle()
    assert gc.get_freeze_count() > 1000  # the modules, classes and functions of this process
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD


def test_cyclic_garbage_made_after_settling_is_still_collected() -> None:
    heap.settle()
    ref = _cycle()
    gc.collect()
    assert ref() is None


def test_settling_again_collects_what_was_frozen_and_became_garbage() -> None:
    """A reload's replaced configuration, say: frozen while alive, then dropped in a cycle."""
    holder = [_Node()]
    holder[0].other = holder[0]  # a cycle of one
    ref = weakref.ref(holder[0])
    heap.settle()
    holder.clear()
    gc.collect()
    assert ref() is not None  # frozen: a collection does not look at it
    heap.settle()
    assert ref() is None
