"""The daemon's parts, built from the configuration and wired to each other.

The construction half of the composition root: :class:`Assembly` builds every part once, in the
order that matters (secrets registered before anything logs, the metrics' listeners before the
announcer's, the shared rate-limit buckets last), and :class:`daemon.app.Daemon`, an assembly,
starts, reloads and stops them. What a reload replaces (the routes, the directory, the tokens, the
templates...) is taken by :meth:`Assembly._adopt`, and the parts built once read it through
callables, so they see the new. The builders of single parts are :mod:`daemon.wiring` and
:mod:`daemon.build`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from daemon.ack_updates import AckUpdates
from daemon.api.ack import slack_apps, with_repliers
from daemon.api.ratelimit import SharedBuckets
from daemon.api.views import iso
from daemon.build import api_grants, build_channels, build_store, register_secrets, twilio_accounts
from daemon.build_checks import build_checks
from daemon.clock import Clock, SystemClock
from daemon.config import Config
from daemon.config_directory import build_directory
from daemon.core.directory import Directory
from daemon.core.routing import Route
from daemon.intake.accept import Acceptor
from daemon.intake.smtp import SmtpIntake
from daemon.metrics import Metrics
from daemon.rendering import Renderer, Unresolved, template_book, unresolved_reporter
from daemon.retention import Pruner
from daemon.scheduler import CheckScheduler
from daemon.store.base import StoreUnavailable
from daemon.wiring import (
    build_announcer,
    build_catchup,
    build_dispatcher,
    build_drills,
    build_leadership,
    build_monitor,
    build_people,
    build_store_health,
    build_supervision,
    feed_metrics,
)


class Assembly:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        systemd_env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        register_secrets(config)
        self._clock = clock or SystemClock()
        self._adopt(config)
        self.store = build_store(config)
        self.monitor = build_monitor(config, self.store, self._clock)
        self.channels = build_channels(config)
        self.metrics = Metrics()
        self.people = build_people(config, lambda: self._directory, lambda: self._routes)
        self.renderer = self._renderer(on_unresolved=unresolved_reporter(self.metrics.registry))
        self.dispatcher = build_dispatcher(
            config,
            self.store,
            self.channels,
            self.monitor,
            lambda: self._routes,
            self._clock,
            self.renderer,
            lambda: self._policy_digest,
        )
        # an edit renders again what was sent: the unresolved recipients were reported then
        self.ack_updates = AckUpdates(self.store, lambda: self.channels, self._renderer(), self._clock)
        self.leadership = build_leadership(config, self.store, self.monitor, self._clock, self.dispatcher)
        if self.leadership is not None:
            self.metrics.watch_leadership()
        self.scheduler = CheckScheduler(build_checks(config), self.monitor, self._clock, self._leads)
        self.store_health = build_store_health(self.store, self._clock, self.dispatcher)
        self.acceptor = Acceptor(
            self.store,
            lambda: self._routes,
            self._clock,
            self.dispatcher.wake,
            store_health=self.store_health,
        )
        self.supervision = build_supervision(config, systemd_env, self._status_line, self.dispatcher)
        feed_metrics(self.metrics, self.dispatcher, self.acceptor, self.monitor)
        self.metrics.watch_rate_limits(self._rate_limited)
        self.announcer = build_announcer(config, self.acceptor, self.store, self.monitor, self._clock)
        self.drills = build_drills(config, self.store, lambda: self._routes, self._clock)
        self.catchup = build_catchup(
            config,
            self.store,
            self.people,
            lambda: self._routes,
            self._clock,
            self.dispatcher,
            self._leads,
            self.metrics.relayed_after_outage.inc,
        )
        self.pruner = Pruner(
            self.store,
            config.store.retention,
            self._clock,
            self._leads,
            on_pruned=self.metrics.pruned.inc,
            on_failed=self.metrics.prune_failures.inc,
        )
        self.smtp = None if config.intake.smtp is None else SmtpIntake(config.intake.smtp, self.acceptor)
        #: the tokens' rate limits, counted once for this process and its intake workers (made
        #: last: a part above that fails to build leaves no descriptor behind)
        self.buckets = SharedBuckets.create()

    def _renderer(self, on_unresolved: Callable[[Unresolved], None] | None = None) -> Renderer:
        return Renderer(
            lambda: self.monitor.state,
            people=self.people,
            clock=self._clock,
            on_unresolved=on_unresolved,
            book=lambda: self._templates,
        )

    def _rate_limited(self) -> dict[str, int]:
        """Each rate-limited token's 429s so far, on every port."""
        limited = (name for name, grant in self._grants.items() if grant.per_second is not None)
        return {name: self.buckets.refused(name) for name in limited}

    def _adopt(self, config: Config) -> None:
        """Take what a reload replaces from ``config`` (the parts built once read it through these)."""
        self._routes: tuple[Route, ...] = config.policy()
        self._policy_digest = config.policy_digest()
        self._directory: Directory = build_directory(config.directory)
        self._tokens = config.api_tokens()
        self._twilio_accounts = with_repliers(twilio_accounts(config), config)
        self._slack_apps = slack_apps(config)
        self._templates = template_book(config)
        self._grants = api_grants(config)
        self._intake = config.intake

    def _leads(self) -> bool:
        return self.leadership is None or self.leadership.is_leader

    async def _status_line(self) -> str:
        """systemd's STATUS=: the provider, the store if it fails, the queue if it can be read.

        Asked every few seconds, the store's health probes a store that failed (bounded, as for
        /healthz): it is found to commit again with no request from outside."""
        line = f"provider {self.monitor.state.value} (routing: {self.monitor.mode})"
        failing = await self.store_health.verdict()
        if failing is not None:
            line += f"; store unavailable since {iso(failing.since_at)} (intake refused): {failing.reason}"
        try:
            queue = await self.store.queue()
        except StoreUnavailable:  # the status loop must outlive the outage it reports
            return f"{line}; notifications: unknown (the store cannot be read)"
        counts = ", ".join(f"{n} {state}" for state, n in sorted(queue.notifications.items())) or "none"
        return f"{line}; notifications: {counts}"
