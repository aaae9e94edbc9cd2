"""When checks run beyond their schedules: at once after a failed send, the controls at once when
the provider's checks start failing, and never a drill by accident (daemon/scheduler.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest

from daemon.app import Daemon
from daemon.clock import SystemClock
from daemon.config import parse_config
from daemon.core.model import CheckResult, CheckStatus
from daemon.monitor import ProviderMonitor
from daemon.scheduler import CheckScheduler, ScheduledCheck
from tests.support import until


class CountingCheck:
    def __init__(self, name: str) -> None:
        self.name = name
        self.runs = 0

    async def run(self) -> CheckResult:
        self.runs += 1
        return CheckResult(self.name, CheckStatus.OK, "ok", 0.0, datetime.now(UTC))

    async def aclose(self) -> None:
        pass


class Results:
    """What the scheduler hands its monitor: here, nothing is decided."""

    async def check_result(self, result: CheckResult) -> None:
        pass


async def test_running_checks_at_once_leaves_a_drill_at_its_time() -> None:
    """run_now runs the checks named (or all of them), never the scheduler's other jobs: a failed
    real send used to start the monthly failover drill, in the middle of an incident."""
    smtp, control = CountingCheck("smtp"), CountingCheck("ctl")
    drills: list[datetime] = []

    async def drill() -> None:
        drills.append(datetime.now(UTC))

    checks = [ScheduledCheck(smtp, 3600, 5), ScheduledCheck(control, 3600, 5)]
    scheduler = CheckScheduler(checks, cast(ProviderMonitor, Results()), SystemClock())
    scheduler.schedule("0 0 1 1 *", drill, "drill")
    scheduler.start()
    try:
        await until(lambda: smtp.runs == 1 and control.runs == 1)
        scheduler.run_now(["ctl"])
        await until(lambda: control.runs == 2)
        assert smtp.runs == 1  # only the check named
        scheduler.run_now()
        await until(lambda: smtp.runs == 2 and control.runs == 3)
        assert drills == []
    finally:
        await scheduler.shutdown()


class CrashingCheck:
    """A check with a bug: its run lets an exception out (as imaplib's UnicodeEncodeError on a
    password outside ASCII did), quoting what it was given."""

    name = "crashing"

    async def run(self) -> CheckResult:
        "pässword".encode("ascii")
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        pass


class Recording:
    def __init__(self) -> None:
        self.results: list[CheckResult] = []

    async def check_result(self, result: CheckResult) -> None:
        self.results.append(result)


async def test_a_check_that_raises_reads_unknown_and_names_no_input() -> None:
    """A check's bug used to leave its run without a result (only APScheduler's traceback): its
    results went stale, and a confirming check without a fresh OK kept recovery waiting, silently.
    It reads UNKNOWN (our fault, no evidence against the provider), with the exception's type only."""
    monitor = Recording()
    scheduler = CheckScheduler(
        [ScheduledCheck(CrashingCheck(), 3600, 5)], cast(ProviderMonitor, monitor), SystemClock()
    )
    scheduler.start()
    try:
        await until(lambda: len(monitor.results) == 1)
    finally:
        await scheduler.shutdown()
    [result] = monitor.results
    assert result.status is CheckStatus.UNKNOWN
    assert "UnicodeEncodeError" in result.reason and "ässword" not in result.reason, result.reason


CONFIG = """\
store: {{path: {store}}}
api: {{listen: 127.0.0.1:0, tokens: [{{name: t, token: "check-scheduling-token-0123"}}]}}
provider:
  name: p
  smtp: {{host: 127.0.0.1, port: {refusing}, starttls: false, timeout: 2s}}
  mail_from: bc@test.example
  failure_threshold: 3
  checks:
    - {{type: smtp, every: 1h, timeout: 2s}}
    - {{type: tcp, name: control, host: 127.0.0.1, port: {listening}, every: 1h, timeout: 2s, role: control}}
channels:
  email: {{type: email, to: [ops@test.example]}}
routes:
  - {{match: {{}}, healthy: [email], outage: [email]}}
"""


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    with socket.socket() as refused, socket.socket() as listening:
        refused.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        text = CONFIG.format(
            store=tmp_path / "o.db", refusing=refused.getsockname()[1], listening=listening.getsockname()[1]
        )
        daemon = Daemon(parse_config(text))
        await daemon.start()
        yield daemon
        await daemon.stop()


async def test_the_controls_run_at_once_when_the_provider_is_suspected(daemon: Daemon) -> None:
    """The provider's check fails (the provider is suspected): the controls run at once rather
    than on their schedule (an hour here), so they have spoken before failing rounds could
    declare an outage that is our own network's."""

    async def control_runs() -> int:
        view = await daemon.store.provider(events=0, checks=50)
        return sum(1 for result in view.checks if result.check == "control")

    async def suspected_and_rerun() -> bool:
        return daemon.monitor.state.value == "suspect" and await control_runs() == 2

    await until(suspected_and_rerun, 30)
    view = await daemon.store.provider(events=0, checks=50)
    assert sum(1 for result in view.checks if result.check == "smtp") == 1


async def test_a_run_submitted_as_the_scheduler_stops_does_not_run(caplog: pytest.LogCaptureFixture) -> None:
    """A check run APScheduler had just handed to the loop when shutdown() came used to start after
    it: the check ran after its aclose(), and a cancellation at the loop's end was logged as an
    ERROR with a traceback. Such a run now ends at once."""
    smtp = CountingCheck("smtp")
    scheduler = CheckScheduler(
        [ScheduledCheck(smtp, 3600, 5)], cast(ProviderMonitor, Results()), SystemClock()
    )
    scheduler.start()
    await until(lambda: smtp.runs == 1)
    scheduler.run_now()
    for _ in range(100):  # until APScheduler has made the run's task, not yet started
        if any(
            "run_coroutine_job" in repr(t.get_coro())
            for t in asyncio.all_tasks()
            if t is not asyncio.current_task()
        ):
            break
        await asyncio.sleep(0)
    await scheduler.shutdown()
    for _ in range(10):
        await asyncio.sleep(0)
    assert smtp.runs == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
