"""Logging a failure that repeats every pass without flooding the journal.

The dispatcher passes about once a second; while the store is down (a PostgreSQL outage, a full
disk) each pass fails the same way. The first failure is logged at once, then one line a minute
saying how long and how many passes, then the recovery: an operator reading the journal sees the
episode, and it does not bury everything else for as long as the outage lasts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

#: while the failure lasts, one line this often
REPEAT_S = 60.0


@dataclass
class Trouble:
    """One kind of failure, as it starts, lasts and ends; times are monotonic seconds."""

    log: logging.Logger
    what: str
    event: str
    since: float | None = None
    failures: int = 0
    told_at: float = 0.0

    def failed(self, now: float, exc: BaseException) -> None:
        self.failures += 1
        if self.since is None:
            self.since, self.told_at = now, now
            self.log.error("%s: %s", self.what, exc, extra={"event": self.event})
        elif now - self.told_at >= REPEAT_S:
            self.told_at = now
            self.log.error(
                "%s for %.0f s (%d times): %s",
                self.what,
                now - self.since,
                self.failures,
                exc,
                extra={"event": self.event, "failures": self.failures},
            )

    def succeeded(self, now: float) -> None:
        if self.since is None:
            return
        self.log.warning(
            "%s: over after %.0f s (%d times)",
            self.what,
            now - self.since,
            self.failures,
            extra={"event": f"{self.event}.over", "failures": self.failures},
        )
        self.since, self.failures = None, 0
