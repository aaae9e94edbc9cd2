"""Notification ids: monotonic ULIDs (time-ordered, 26 Crockford base32 characters).

Within one millisecond the random part is incremented instead of drawn again (the ULID spec's
monotonic mode), so ids sort in the order they were made: a batch lists in the order it was sent.
"""

from __future__ import annotations

import os
import random
import threading
from datetime import datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
# Two characters per lookup (10 bits): half the Python-level steps of one per character.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))

# Ids must be unique, not secret (reading one needs an API token): a PRNG seeded from the OS
# is enough and costs no system call per id, which showed up at ~20% of the intake path.
_random = random.Random(os.urandom(32))
_lock = threading.Lock()
_last = (0, 0)


def new_id(now: datetime) -> str:
    global _last
    ms = int(now.timestamp() * 1000)
    with _lock:
        last_ms, last_random = _last
        if ms <= last_ms and last_random + 1 < 1 << _RANDOM_BITS:
            ms, value = last_ms, last_random + 1
        else:
            value = _random.getrandbits(_RANDOM_BITS - 1)  # headroom for increments within the ms
        _last = (ms, value)
    number = (ms << _RANDOM_BITS) | value
    return "".join([_PAIRS[(number >> shift) & 1023] for shift in _SHIFTS])
