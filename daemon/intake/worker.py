"""One intake worker process, started by the daemon (:mod:`daemon.intake.workers`), never by hand.

    python -m daemon.intake.worker --host H --port P --report-fd M --buckets-fd B --index I

It serves the intake endpoints (:mod:`daemon.api.intake_app`) on ``H:P``, which it binds with
``SO_REUSEPORT`` beside its siblings (the daemon holds the port), and commits to the daemon's
store, so its 202 means what the API port's means. What it shares with the daemon goes over two
pipes:

- stdin, from the daemon: one JSON line ``{"config": text, "filename": name}`` to start with, the
  text the daemon itself parsed; each later line is a reload. End of file means the daemon is
  gone: the worker drains and exits rather than take requests nobody would deliver soon.
- ``--report-fd``, to the daemon: ``{"ready": pid}`` once serving, then after commits
  ``{"accepted": [[severity, source, n], ...], "duplicates": n}``, which the daemon counts in its
  metrics and which wakes its dispatcher at once; ``"turned_away": {limit: n}`` is added when
  clients were answered 503 for load (:mod:`daemon.api.admission`), for the daemon's metrics.

``--buckets-fd`` is the daemon's table of rate limits (:mod:`daemon.api.ratelimit`): a token's
requests here and on the daemon's own port take from one bucket.

SIGTERM (the daemon stops its workers when it stops; under systemd's ``KillMode=mixed`` only the
daemon gets systemd's) drains: new requests get
503, requests in progress finish within 5 s, the store is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import signal
import sys
from collections import Counter
from collections.abc import Sequence

from daemon import heap
from daemon.api.admission import INTAKE, Admission
from daemon.api.auth import BearerAuth
from daemon.api.intake_app import IntakeApp
from daemon.api.lean_http import LeanServer
from daemon.api.ratelimit import Buckets, LocalBuckets, SharedBuckets
from daemon.api.serving import bind
from daemon.api.webhooks import WebhookIntake
from daemon.build import api_grants, build_store, register_secrets
from daemon.clock import SystemClock
from daemon.config import Config, ConfigError, parse_config
from daemon.core.model import Notification
from daemon.core.routing import Route
from daemon.intake.accept import Acceptor
from daemon.logs import configure_logging
from daemon.store.values import Accepted
from daemon.store_health import StoreHealth

log = logging.getLogger(__name__)

EX_CONFIG = 78
#: the control line carries the whole configuration file
CONTROL_LIMIT = 16 << 20
#: on SIGTERM, how long requests already received may take to be answered
STOP_GRACE_S = 5.0
BACKLOG = 1024


class Reports:
    """Counts of committed notifications, written to the daemon as soon as they are committed.

    The first commit of an event-loop turn is reported at once, before its callers are answered,
    so the daemon starts delivering while the worker writes its 202s (reported after the replies,
    it reached the daemon about 0.25 ms later); the other commits of that turn go in one more
    line at the turn's end. The pipe is non-blocking: if the daemon does not read (stopped, busy),
    the counts wait here and go with the next write; a worker never blocks on its daemon.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        os.set_blocking(fd, False)
        self._counts: Counter[tuple[str, str]] = Counter()
        self._duplicates = 0
        self._turned_away: Counter[str] = Counter()
        self._pending = b""
        self._scheduled = False

    def ready(self) -> None:
        self._write(json.dumps({"ready": os.getpid()}).encode() + b"\n")

    def accepted(self, notifications: Sequence[Notification], accepted: Sequence[Accepted]) -> None:
        for notification, result in zip(notifications, accepted, strict=True):
            if result.duplicate:
                self._duplicates += 1
            else:
                self._counts[(notification.severity.value, notification.source)] += 1
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._end_turn)  # first: _flush may raise
            self._flush()

    def turned_away(self, limit: str) -> None:
        """A client answered 503 by ``limit``: told at the turn's end (a flood is one line a turn)."""
        self._turned_away[limit] += 1
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._end_turn)

    def _end_turn(self) -> None:
        self._scheduled = False
        if self._counts or self._duplicates or self._turned_away:
            self._flush()

    def _flush(self) -> None:
        counts = [[severity, source, n] for (severity, source), n in self._counts.items()]
        line: dict[str, object] = {"accepted": counts, "duplicates": self._duplicates}
        if self._turned_away:
            line["turned_away"] = dict(self._turned_away)
        self._counts.clear()
        self._duplicates = 0
        self._turned_away.clear()
        self._write(json.dumps(line, separators=(",", ":")).encode() + b"\n")

    def _write(self, data: bytes) -> None:
        self._pending += data
        try:
            written = os.write(self._fd, self._pending)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # the daemon is gone; stdin's end of file stops us
                self._pending = b""
                return
            raise
        self._pending = self._pending[written:]


class IntakeWorker:
    def __init__(
        self,
        control: asyncio.StreamReader,
        config: Config,
        listen: tuple[str, int],
        reports: Reports,
        buckets: Buckets,
    ) -> None:
        self._control_reader = control
        self._listen = listen
        self._reports = reports
        self._buckets = buckets
        self._draining = False
        self._stop = asyncio.Event()
        self._apply(config)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)  # reloads come from the daemon
        store = build_store(self._config, intake_worker=True)
        await store.open()
        clock = SystemClock()
        health = StoreHealth(store, clock)  # its own: no dispatcher here, its accepts and probes
        try:
            await self._serve(
                Acceptor(store, lambda: self._routes, clock, _nothing, store_health=health), health
            )
        finally:
            await health.close()
            await store.close()

    async def _serve(self, acceptor: Acceptor, health: StoreHealth) -> None:
        acceptor.subscribe(self._reports.accepted)
        gate = BearerAuth(lambda: self._tokens, lambda: self._grants, buckets=self._buckets)
        hooks = WebhookIntake(acceptor, gate, lambda: self._draining, lambda: self._intake)
        app = IntakeApp(acceptor, gate=gate, hooks=hooks, draining=lambda: self._draining, store=health)
        # Listening only now that the store is open: the kernel hands a listening worker its
        # share of new connections, which one still starting could not answer.
        sock = bind(*self._listen, reuse_port=True)
        sock.listen(BACKLOG)
        api = self._config.api
        widen = hooks.body_limit(api.max_body_bytes, api.max_alert_body_bytes)
        admission = Admission(
            INTAKE,
            api.max_connections,
            api.buffered_body_limit,
            self._reports.turned_away,
            max_per_client=api.per_client_limit,
        )
        server = LeanServer(app, api.max_body_bytes, admission=admission, widen=widen, screen=app.screen)
        await server.start(sock)
        heap.settle()
        self._reports.ready()
        control = asyncio.create_task(self._follow(), name="intake-control")
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait([stop, control], return_when=asyncio.FIRST_COMPLETED)
        self._draining = True
        control.cancel()
        stop.cancel()
        await server.stop(grace_s=STOP_GRACE_S)

    def _apply(self, config: Config) -> None:
        register_secrets(config)
        self._config = config
        self._routes: tuple[Route, ...] = config.policy()
        self._tokens = config.api_tokens()
        self._grants = api_grants(config)
        self._intake = config.intake

    async def _follow(self) -> None:
        """Reloads from the daemon until its end of the pipe closes."""
        while line := await self._control_reader.readline():
            try:
                self._apply(_parse(line))
            except (ConfigError, ValueError) as exc:
                log.error(
                    "intake worker kept its configuration: %s",
                    exc,
                    extra={"event": "intake.worker_reload_failed"},
                )
            else:
                heap.settle()
                log.info(
                    "intake worker reloaded", extra={"event": "intake.worker_reloaded", "pid": os.getpid()}
                )
        log.warning("the daemon is gone: intake worker stopping", extra={"event": "intake.worker_orphaned"})


async def serve_worker(
    host: str, port: int, report_fd: int, index: int, buckets_fd: int | None = None
) -> int:
    """Read the configuration from stdin, then serve until SIGTERM or the daemon goes away."""
    loop = asyncio.get_running_loop()
    control = asyncio.StreamReader(limit=CONTROL_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(control), sys.stdin)
    first = await control.readline()
    if not first:
        return 0
    try:
        config = _parse(first)
    except (ConfigError, ValueError) as exc:
        log.error("intake worker %d cannot start: %s", index, exc, extra={"event": "intake.worker_config"})
        return EX_CONFIG
    # without a table (started by hand, which the daemon never does) its limits are its own
    buckets = LocalBuckets() if buckets_fd is None else SharedBuckets(buckets_fd)
    await IntakeWorker(control, config, (host, port), Reports(report_fd), buckets).run()
    return 0


def _nothing() -> None:
    """The daemon's dispatcher is woken by the report instead."""


def _parse(line: bytes) -> Config:
    message = json.loads(line)
    return parse_config(message["config"], filename=message["filename"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m daemon.intake.worker")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--report-fd", type=int, required=True)
    parser.add_argument("--buckets-fd", type=int, help="the daemon's shared rate limits")
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args(argv)
    configure_logging()
    code: list[int] = []

    async def run() -> None:
        code.append(await serve_worker(args.host, args.port, args.report_fd, args.index, args.buckets_fd))

    from daemon.cli import run_async

    run_async(run())
    return code[0] if code else 1


if __name__ == "__main__":
    raise SystemExit(main())
