"""Notification ids: ULIDs (time-ordered, 26 Crockford base32 characters)."""

from __future__ import annotations

import os
import random
from datetime import datetime

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# Ids must be unique, not secret (reading one needs an API token): a PRNG seeded from the OS
# is enough and costs no system call per id, which showed up at ~20% of the intake path.
_random = random.Random(os.urandom(32))


def new_id(now: datetime) -> str:
    value = (int(now.timestamp() * 1000) << 80) | _random.getrandbits(80)
    return "".join(_ALPHABET[(value >> shift) & 31] for shift in range(125, -1, -5))
