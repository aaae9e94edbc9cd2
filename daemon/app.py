"""The composition root: configuration → store → channels → dispatcher → checks → API.

Nothing else constructs the world. The daemon is an :class:`~daemon.assembly.Assembly` (its parts,
built and wired) that this module starts, reloads and stops: it owns the signals (SIGTERM/SIGINT
drain and stop, SIGHUP reloads) and every long-running task; none is left orphaned.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from daemon import heap
from daemon.api.admission import API, Admission
from daemon.api.app import ApiContext, create_api
from daemon.api.serving import ApiServer, ListenError, bind, server_config
from daemon.assembly import Assembly
from daemon.build import register_secrets
from daemon.catchup import HORIZON
from daemon.clock import Clock
from daemon.config import Config, ConfigError, load_config
from daemon.core.health import Transition
from daemon.core.model import Mode, ProviderState
from daemon.core.routing import OVERLAYS, overrides_any
from daemon.intake.workers import IntakeWorkers
from daemon.reloading import built_once, only_running_channels, reload_smtp
from daemon.wiring import build_workers

log = logging.getLogger(__name__)


class Daemon(Assembly):
    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        clock: Clock | None = None,
        systemd_env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(config, clock=clock, systemd_env=systemd_env)
        self._config_path = config_path
        self.draining = False
        #: set once start() has brought up everything it starts, just before READY=1
        self.started = False
        #: set once start() has opened the store: from then on stop() undoes what start() began
        self.opened = False
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[object]] = set()
        self._server: ApiServer | None = None
        self.api_port: int | None = None
        #: the API port's limits (api.max_connections, api.max_buffered_body_bytes), once it listens
        self.api_admission: Admission | None = None
        self.workers: IntakeWorkers | None = None

    async def start(self) -> None:
        """Bind the API's port, open the store, resume state, start dispatching and checking, serve
        the API, then READY. The port first: one in use (by a second daemon on the same store, say)
        ends the start before anything runs."""
        sock = bind(self.config.api.host, self.config.api.port)
        try:
            await self._start(sock)
        except BaseException:
            if self._server is None:  # once serving, the server owns the socket (stop() closes it)
                sock.close()
            raise

    async def _start(self, sock: socket.socket) -> None:
        await self.store.open()
        self.opened = True
        await self.monitor.load()
        self.monitor.on_mode_change(self._mode_changed)
        self.monitor.on_lead(self._elected)
        if self.leadership is not None:  # HA wiring (issue 8)
            await self.leadership.start()
            if self.leadership.task is not None:  # it ends only if another process takes the node name
                self._tasks.append(self.leadership.task)
        else:  # alone, this node leads from the start
            self._elected()
            if self.config.provider.announce:
                self.announcer.elected()
        self.monitor.on_passive_failure(self.scheduler.run_now)
        self.monitor.on_transition(self._suspected)
        self.monitor.on_transition(self._overlaid)
        self._tasks.append(asyncio.create_task(self.dispatcher.run(), name="dispatcher"))
        self._tasks.append(asyncio.create_task(self.pruner.run(), name="retention"))
        if self.config.drills is not None:
            routes = self.config.drills.routes
            self.scheduler.schedule(self.config.drills.schedule, lambda: self.drills.start(routes), "drill")
        self.scheduler.start()
        await self._start_api(sock)
        await self._start_workers()
        if self.smtp is not None:
            await self.smtp.start()
        self.started = True
        await self.supervision.ready()
        log.info(
            "backchannel ready on %s:%s",
            self.config.api.host,
            self.api_port,
            extra={"event": "daemon.ready", "port": self.api_port, "state": self.monitor.state.value},
        )

    async def _start_api(self, sock: socket.socket) -> None:
        settings = self.config.api
        self.api_admission = admission = Admission(
            API,
            settings.max_connections,
            settings.buffered_body_limit,
            lambda limit: self.metrics.http_turned_away(API, limit),
            max_per_client=settings.per_client_limit,
        )
        ctx = ApiContext(
            acceptor=self.acceptor,
            store=self.store,
            monitor=self.monitor,
            provider_name=self.config.provider.name,
            tokens=lambda: self._tokens,
            draining=lambda: self.draining,
            started=lambda: self.started,
            store_health=self.store_health,
            in_flight=lambda: self.dispatcher.in_flight,
            max_body_bytes=settings.max_body_bytes,
            max_alert_body_bytes=settings.max_alert_body_bytes,
            twilio_accounts=lambda: self._twilio_accounts,
            slack_apps=lambda: self._slack_apps,
            on_acknowledged=self.ack_updates.acknowledged,
            metrics=self.metrics,
            drills=self.drills,
            grants=lambda: self._grants,
            buckets=self.buckets,
            webhooks=lambda: self._intake,
            clock=self._clock,
            admission=admission,
        )
        self.api_port = sock.getsockname()[1]
        self._server = ApiServer(server_config(create_api(ctx), admission))
        serving = asyncio.create_task(self._server.serve(sockets=[sock]), name="api")
        self._tasks.append(serving)
        while not self._server.started:
            if serving.done():
                await serving
                raise RuntimeError("the API server stopped while starting")
            await asyncio.sleep(0.01)

    async def _start_workers(self) -> None:
        self.workers = build_workers(self.config, self._worker_accepted, self.metrics, self.buckets)
        if self.workers is not None:
            await self.workers.start()

    def _worker_accepted(self, counts: Mapping[tuple[str, str], int], duplicates: int) -> None:
        self.metrics.accepted_counts(counts, duplicates)
        if counts:
            self.dispatcher.wake()

    def _elected(self) -> None:
        # The last leader (or run) may have stopped between a recovery and its catch-up, or hit a
        # store error in it: queued once by key. In an outage it is held until the recovery.
        self._background(self.catchup.run(horizon=HORIZON))
        # ...or died for good in the re-plan of a reload of the routes this node runs: still owed
        self.dispatcher.resume_replan()

    def _suspected(self, transition: Transition) -> None:
        """The provider's checks started failing: run the controls at once, so that by the time
        the failing rounds could declare an outage the controls have said whether our own network
        is the one failing (on their own schedule, slower than the provider's checks, they reported
        after the outage was declared, and routing failed over for a local fault)."""
        if transition.to_state == ProviderState.SUSPECT and self.monitor.controls:
            self.scheduler.run_now(self.monitor.controls)

    def _overlaid(self, transition: Transition) -> None:
        """Into or out of unknown or credentials: where a route has actions of its own for the
        state, its unsent notifications take them (or leave them), though the mode stays."""
        if {transition.from_state, transition.to_state} & set(OVERLAYS) and overrides_any(self._routes):
            # stored as owed, as a reload's: a crash before it is done leaves it to the next start
            self._background(self.dispatcher.owe_replan())

    def _mode_changed(self, mode: Mode) -> None:
        log.warning("routing switches to %s plans", mode, extra={"event": "routing.mode", "mode": mode})
        self.dispatcher.request_sweep()
        if mode == "healthy" and self._leads():
            self._background(self.catchup.after_recovery())

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        """Until a stop is requested or a task dies (an unexpected crash stops the daemon loudly)."""
        stop = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait([stop, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        for task in done:
            if task is not stop and (exc := task.exception()) is not None:
                raise exc

    async def stop(self) -> None:
        """Drain: refuse new work, let in-flight sends finish within the grace period, close."""
        self.draining = True
        await self.supervision.stopping()
        if self.workers is not None:  # they finish the requests they are answering, then exit
            await self.workers.stop(grace_s=10)
        if self.smtp is not None:
            await self.smtp.stop(grace_s=5)
        log.info("draining", extra={"event": "daemon.draining", "in_flight": self.dispatcher.in_flight})
        await self.scheduler.shutdown()
        if self.leadership is not None:  # HA wiring (issue 8): hand over at once
            await self.leadership.stop()
        self.dispatcher.stop()
        self.catchup.stop()
        self.pruner.stop()
        if self._server is not None:
            self._server.should_exit = True
        await asyncio.gather(*self._tasks, *self._side_tasks, return_exceptions=True)
        await self.announcer.drain()
        await self.ack_updates.drain()
        for channel in self.channels.values():
            await channel.aclose()
        await self.store_health.close()
        await self.store.close()
        self.buckets.close()
        log.info("stopped", extra={"event": "daemon.stopped"})

    def reload(self) -> None:
        """SIGHUP: validate the file fully; apply routes and tokens only if all of it is good."""
        if self._config_path is None:
            return
        self.supervision.reloading()
        try:
            config = load_config(self._config_path)
            only_running_channels(config, self.config)
            restart_needed = reload_smtp(config, self.smtp)  # last: it changes the running intake
        except ConfigError as exc:
            self.metrics.reloaded(ok=False)
            log.error(
                "reload rejected, keeping the running configuration: %s",
                exc,
                extra={"event": "config.reload_failed"},
            )
        except Exception:  # a bug in validating must not leave the reload half told (RELOADING=1)
            self.metrics.reloaded(ok=False)
            log.exception(
                "reload failed, keeping the running configuration", extra={"event": "config.reload_failed"}
            )
        else:
            register_secrets(config)  # rotated secrets are masked in the logs from now on
            self._adopt(config)
            for field in [*built_once(config, self.config), *restart_needed]:
                log.warning(
                    "%s changed: it takes effect on restart",
                    field,
                    extra={"event": "config.restart_needed", "field": field},
                )
            if self.workers is not None and config.source is not None:
                self.workers.reload(config.source)
            # stored as owed before it starts: a crash before it is done leaves it to the next start
            self._background(self.dispatcher.owe_replan())
            self.metrics.reloaded(ok=True)
            log.info("configuration reloaded", extra={"event": "config.reloaded"})
            heap.settle()  # the replaced configuration's cycles, if any
        self._background(self.supervision.reloaded())

    def _background(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)


async def serve(
    config: Config, config_path: Path | None = None, systemd_env: Mapping[str, str] | None = None
) -> None:
    """Run the daemon until SIGTERM/SIGINT."""
    daemon = Daemon(config, config_path=config_path, systemd_env=systemd_env)
    # Before start() says READY: a SIGHUP (systemd's reload) or SIGTERM sent the moment the daemon
    # reports ready must reach its handler, not the default action that kills the process.
    daemon.install_signal_handlers()
    try:
        await daemon.start()
    except ListenError:
        if daemon.opened:  # the SMTP intake's or the intake workers' port: what runs ends cleanly
            await daemon.stop()
        raise
    heap.settle()
    try:
        await daemon.wait()
    finally:
        await daemon.stop()
