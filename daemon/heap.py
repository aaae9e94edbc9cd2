"""Python's cyclic garbage collector, set for a long-running server (the daemon, its intake workers).

By default CPython runs a young collection every 700 net allocations of container objects and,
every hundred of those, a full one that walks every object in the process: about 83,000 in an
intake worker once started (modules, pydantic's validators, the routes), 28 ms per full collection.
Under 7,000 requests/s that was 450 ms of every 10 s, each a 28 ms pause for every request in flight,
plus 2,000 young collections (170 ms). What a request makes is freed by reference counting as it
goes; the collector is there for the rare cycle (an exception held with its traceback, say). So:

- once the process has started, and again after each reload, what exists is collected once and
  frozen (``gc.freeze``): no later collection walks it;
- a young collection waits for 10,000 net allocations instead of 700: requests in flight do not
  reach that (none in 10 s at 7,000 requests/s), cyclic garbage still does, and is collected.

A frozen object that later becomes cyclic garbage (part of a configuration a reload replaced) waits
for the next :func:`settle`, which unfreezes, collects and freezes again.
"""

from __future__ import annotations

import gc

#: net allocations of container objects between two young collections (CPython's default: 700)
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Collect what is garbage now, freeze the rest, and space young collections out."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
