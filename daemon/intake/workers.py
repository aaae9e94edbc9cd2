"""The daemon's side of the intake workers (``intake.workers``): start, feed, watch, restart, stop.

Intake and delivery used to share one event loop, so on a small machine a burst of one-alert
requests left delivery and intake each a fraction of one core. Workers are separate processes
(:mod:`daemon.intake.worker`) serving only the intake endpoints on a listener of their own; the
daemon keeps the checks, the decisions and delivery. Each worker listens on the same port with
``SO_REUSEPORT``, so the kernel spreads connections evenly over them (one shared listening socket
let the first worker to wake take a whole burst of new connections). The daemon holds the port
with a bound socket that does not listen, so the port stays reserved while a worker restarts and
the kernel sends new connections to the workers that are up.

A worker that dies is started again (1 s, doubling to 30 s while it keeps dying); what it had
committed is in the store, and a request it had not answered was not accepted (the client
retries it, with the same idempotency key). The daemon is not ready until every worker is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping

from daemon.api.serving import bind
from daemon.config import ConfigSource
from daemon.intake.workers_config import IntakeWorkersConfig

log = logging.getLogger(__name__)

#: (severity, source) to how many notifications were committed, and how many were duplicates
OnAccepted = Callable[[Mapping[tuple[str, str], int], int], None]
#: an ``api.*`` limit's name, and how many clients it turned away (daemon.api.admission)
OnTurnedAway = Callable[[str, int], None]

START_TIMEOUT_S = 30.0
#: a report line (its counts by severity and source, which clients choose) may be long
REPORT_LIMIT = 16 << 20
BACKOFF_S = (1.0, 30.0)
#: a worker that stayed up this long starts its next restart from the shortest backoff again
STABLE_S = 60.0


class IntakeWorkers:
    def __init__(
        self,
        settings: IntakeWorkersConfig,
        source: ConfigSource,
        on_accepted: OnAccepted,
        *,
        on_count: Callable[[int], None] = lambda n: None,
        on_turned_away: OnTurnedAway = lambda limit, n: None,
        buckets_fd: int,
    ) -> None:
        """``buckets_fd``: the rate-limit table every worker shares with the daemon."""
        self._settings = settings
        self._buckets_fd = buckets_fd
        self._source = source
        self._on_accepted = on_accepted
        self._on_count = on_count
        self._on_turned_away = on_turned_away
        self._sock: socket.socket | None = None
        self._workers = [_Worker(i, self) for i in range(settings.count)]
        self.stopping = False

    @property
    def port(self) -> int:
        assert self._sock is not None, "not started"
        port: int = self._sock.getsockname()[1]
        return port

    @property
    def alive(self) -> int:
        return sum(1 for w in self._workers if w.serving)

    async def start(self) -> None:
        """Bind the listener, start every worker; raises RuntimeError if one cannot start."""
        self._sock = bind(self._settings.host, self._settings.port, reuse_port=True)
        for worker in self._workers:
            worker.start()
        try:
            await asyncio.wait_for(asyncio.gather(*(w.first_ready for w in self._workers)), START_TIMEOUT_S)
        except BaseException:
            await self.stop(grace_s=1)
            raise
        log.info(
            "%d intake workers serving on %s:%d",
            len(self._workers),
            self._settings.host,
            self.port,
            extra={"event": "intake.workers_ready", "port": self.port, "count": len(self._workers)},
        )

    def reload(self, source: ConfigSource) -> None:
        """Hand every worker the configuration the daemon has just accepted."""
        self._source = source
        for worker in self._workers:
            worker.send_config()

    async def stop(self, grace_s: float) -> None:
        """SIGTERM every worker (they finish what they are answering), SIGKILL after ``grace_s``."""
        self.stopping = True
        await asyncio.gather(*(w.stop(grace_s) for w in self._workers))
        if self._sock is not None:
            self._sock.close()

    # -- for _Worker ------------------------------------------------------------------------------

    def spawn_args(self, index: int, report_fd: int) -> list[str]:
        assert self._sock is not None
        return [
            sys.executable,
            "-m",
            "daemon.intake.worker",
            "--host",
            self._settings.host,
            "--port",
            str(self.port),
            "--report-fd",
            str(report_fd),
            "--index",
            str(index),
            "--buckets-fd",
            str(self._buckets_fd),
        ]

    def passed_fds(self, report_fd: int) -> tuple[int, ...]:
        """What a worker inherits: its report pipe and the rate-limit table."""
        return (report_fd, self._buckets_fd)

    def control_line(self) -> bytes:
        source = self._source
        return json.dumps({"config": source.text, "filename": source.filename}).encode() + b"\n"

    def environment(self) -> dict[str, str] | None:
        """The worker resolves ``${...}`` as the daemon did: from the same variables."""
        env = self._source.env
        return None if env is None else {**os.environ, **env}

    def report(self, line: bytes) -> bool:
        """One line from a worker; True if it says the worker is ready."""
        try:
            message = json.loads(line)
            if "ready" in message:
                return True
            counts = {(str(severity), str(source)): int(n) for severity, source, n in message["accepted"]}
            duplicates = int(message["duplicates"])
            turned_away = {str(limit): int(n) for limit, n in message.get("turned_away", {}).items()}
        except (ValueError, TypeError, KeyError, AttributeError):
            log.error("unreadable report from an intake worker: %r", line[:200])
            return False
        self._on_accepted(counts, duplicates)
        for limit, n in turned_away.items():
            self._on_turned_away(limit, n)
        return False

    def changed(self) -> None:
        self._on_count(self.alive)


class _Worker:
    def __init__(self, index: int, pool: IntakeWorkers) -> None:
        self.index = index
        self._pool = pool
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self.first_ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.serving = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"intake-worker-{self.index}")

    def send_config(self) -> None:
        process = self._process
        if process is not None and process.stdin is not None and process.returncode is None:
            try:
                process.stdin.write(self._pool.control_line())
            except (OSError, RuntimeError) as exc:  # it died and is not reaped yet: restarted with the latest
                log.warning("intake worker %d did not take the configuration: %s", self.index, exc)

    async def stop(self, grace_s: float) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace_s)
            except TimeoutError:
                log.error("intake worker %d did not stop in %gs: killed", self.index, grace_s)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()  # it may be waiting to start the worker again
            await asyncio.gather(self._task, return_exceptions=True)

    async def _supervise(self) -> None:
        backoff = BACKOFF_S[0]
        while not self._pool.stopping:
            started = time.monotonic()
            try:
                code: int | str | None = await self._run_once()
            except Exception as exc:  # cannot fork (memory, tasks), a broken pipe: try again later
                log.exception("intake worker %d failed: %s", self.index, exc)
                code = type(exc).__name__
            if self._pool.stopping:
                return
            if not self.first_ready.done():
                self.first_ready.set_exception(
                    RuntimeError(f"intake worker {self.index} exited with {code} before it was ready")
                )
                return
            if time.monotonic() - started > STABLE_S:
                backoff = BACKOFF_S[0]
            log.error(
                "intake worker %d exited with %s; starting it again in %gs",
                self.index,
                code,
                backoff,
                extra={"event": "intake.worker_exited", "worker": self.index, "code": code},
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_S[1])

    async def _run_once(self) -> int | None:
        read_fd, write_fd = os.pipe()
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self._pool.spawn_args(self.index, write_fd),
                stdin=asyncio.subprocess.PIPE,
                env=self._pool.environment(),
                pass_fds=self._pool.passed_fds(write_fd),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.send_config()
        try:
            await self._read_reports(read_fd)
        except BaseException:
            # never one left serving unsupervised (no reports read, no reloads) beside its successor
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            raise
        finally:
            self.serving = False
            self._pool.changed()
        return await self._process.wait()

    async def _read_reports(self, read_fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=REPORT_LIMIT)
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        try:
            while line := await _next_line(reader, self.index):
                if self._pool.report(line):
                    self.serving = True
                    self._pool.changed()
                    if not self.first_ready.done():
                        self.first_ready.set_result(None)
        finally:
            transport.close()


async def _next_line(reader: asyncio.StreamReader, index: int) -> bytes:
    """The next report line; one past REPORT_LIMIT is dropped (its counts are lost, the poll
    still delivers what it counted) rather than end the reading of every later one."""
    while True:
        try:
            return await reader.readline()
        except ValueError as exc:  # the reader has discarded the line, or as much of it as it held
            log.error("intake worker %d sent a report past %d bytes: dropped (%s)", index, REPORT_LIMIT, exc)
