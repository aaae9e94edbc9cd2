"""The check interface: one module per kind of probe, each behind :class:`Check`.

A check runs once and returns a :class:`~daemon.core.model.CheckResult`; it never raises for a
provider problem (that is a result: down, degraded, unknown or credentials) and keeps its own
timeout. The scheduler runs checks; the pure HealthTracker decides what the results mean.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from daemon.core.model import CheckResult


@runtime_checkable
class Check(Protocol):
    name: str

    async def run(self) -> CheckResult: ...

    async def aclose(self) -> None: ...
