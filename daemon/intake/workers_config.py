"""Configuration of the intake workers: ``intake.workers``.

Field reference and when to use them: ``docs/intake.md`` ("Intake workers").
"""

from __future__ import annotations

from pydantic import Field

from daemon.configbase import Listener


class IntakeWorkersConfig(Listener):
    """Extra processes that serve only the HTTP intake endpoints, on a listener of their own.

    They commit to the same store as the daemon, so a 202 from a worker means what it means from
    the API port; the daemon's own process keeps the checks, the routing decisions and delivery.
    """

    listen: str = "127.0.0.1:8026"
    #: processes sharing the listener. On SQLite one is best: writers take turns on one lock, and
    #: a second worker spent its gain waiting for it (docs/performance.md); on PostgreSQL, about
    #: one per core the machine can spare for intake
    count: int = Field(1, ge=1, le=32)
