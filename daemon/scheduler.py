"""Runs the provider checks on their schedules with APScheduler's AsyncIOScheduler.

APScheduler only wakes things up: each run's result goes to the monitor, which decides.
``max_instances=1`` and ``coalesce`` keep a slow check from piling up behind itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from daemon.checks.base import Check
from daemon.clock import Clock
from daemon.core.model import CheckResult, CheckStatus
from daemon.monitor import ProviderMonitor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScheduledCheck:
    check: Check
    every_s: float
    timeout_s: float


class CheckScheduler:
    def __init__(
        self,
        checks: Sequence[ScheduledCheck],
        monitor: ProviderMonitor,
        clock: Clock,
        leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self._checks = list(checks)
        #: with several nodes, jobs that must run once (drills) run only on the leader
        self._leader = leader
        self._monitor = monitor
        self._clock = clock
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._running: set[asyncio.Task[object]] = set()
        self._stopping = False

    def start(self) -> None:
        for item in self._checks:
            self._scheduler.add_job(
                self._run,
                "interval",
                args=[item],
                seconds=item.every_s,
                id=item.check.name,
                next_run_time=datetime.now(UTC),
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(item.every_s)),
            )
        self._scheduler.start()

    def schedule(self, crontab: str, job: Callable[[], Awaitable[object]], name: str) -> None:
        """Run ``job`` on a cron schedule (UTC), e.g. a monthly drill; only while this node leads."""

        async def once() -> None:
            if self._leader():
                await job()
            else:
                log.info("%s skipped: another node leads", name, extra={"event": "job.skipped", "job": name})

        self._scheduler.add_job(
            once,
            CronTrigger.from_crontab(crontab, timezone=UTC),
            id=name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=3600,
        )

    def run_now(self, only: Collection[str] | None = None) -> None:
        """Run the checks at once, every one (a real send just failed: confirm quickly) or those
        named ``only`` (the controls, when the provider is suspected). Checks only: the
        scheduler's other jobs (a drill) keep their times."""
        if not self._scheduler.running:
            return
        for item in self._checks:
            if only is None or item.check.name in only:
                job = self._scheduler.get_job(item.check.name)
                if job is not None:
                    job.modify(next_run_time=datetime.now(UTC))

    async def shutdown(self) -> None:
        """Stop scheduling and cancel checks in progress (their results no longer matter)."""
        self._stopping = True
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        # a run APScheduler has just made a task of, not yet started: let it start, and end (_run)
        await asyncio.sleep(0)
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        for item in self._checks:
            await item.check.aclose()

    async def _run(self, item: ScheduledCheck) -> None:
        if self._stopping:  # handed to the loop as shutdown() began: the check may be closed already
            return
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        try:
            await self._observe(item)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        finally:
            self._running.discard(task)

    async def _observe(self, item: ScheduledCheck) -> None:
        result = await self._guarded(item)
        log.info(
            "check %s: %s (%s)",
            result.check,
            result.status,
            result.reason,
            extra={
                "event": "check.result",
                "check": result.check,
                "status": result.status.value,
                "latency_s": round(result.latency_s, 4),
            },
        )
        await self._monitor.check_result(result)

    async def _guarded(self, item: ScheduledCheck) -> CheckResult:
        """A check keeps its own timeout and reads its own failures; this is the backstop for one
        that does not: past its timeout DOWN, and an exception it let out (a bug of ours, never
        evidence against the provider) UNKNOWN, so the run still has a result that says so."""
        started = self._clock.monotonic()
        try:
            return await asyncio.wait_for(item.check.run(), item.timeout_s + 1.0)
        except TimeoutError:
            reason = f"check did not finish within {item.timeout_s + 1.0:.1f}s"
            status = CheckStatus.DOWN
        except Exception as exc:
            log.exception("check %s failed unexpectedly", item.check.name, extra={"event": "check.crashed"})
            # the type only: an exception's text may quote what the check was given (a password)
            reason = f"the check itself failed ({type(exc).__name__}; see the log)"
            status = CheckStatus.UNKNOWN
        return CheckResult(
            item.check.name, status, reason, self._clock.monotonic() - started, self._clock.now()
        )
