"""The composition root's builders: :class:`daemon.assembly.Assembly` and :class:`daemon.app.Daemon`
call them, and nothing else does.

Each builds one part of the daemon from the configuration and the parts it needs, so those are built
before it; the rest of the order that matters (secrets registered before anything logs, the metrics'
listeners before the announcer's) is the caller's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from channels.base import Channel
from daemon.announce import Announcer
from daemon.api.admission import INTAKE
from daemon.api.ratelimit import SharedBuckets
from daemon.build import channel_policies, mail_channels, primary_channels
from daemon.catchup import CatchUp
from daemon.clock import Clock
from daemon.config import Config
from daemon.core.directory import Directory
from daemon.core.health import Thresholds
from daemon.core.routing import Route
from daemon.dispatch_policy import DispatchSettings
from daemon.dispatcher import Dispatcher
from daemon.drills import Drills
from daemon.intake.accept import Acceptor
from daemon.intake.workers import IntakeWorkers
from daemon.metrics import Metrics
from daemon.monitor import ProviderMonitor
from daemon.refusals import Bounces
from daemon.rendering import People, Renderer, audiences
from daemon.rerouting import Rerouter
from daemon.store.base import Store
from daemon.store.postgres_config import PostgresStoreConfig
from daemon.store_health import Proof, StoreHealth
from daemon.supervision import Supervision

if TYPE_CHECKING:
    from daemon.leadership import Leadership


def build_monitor(config: Config, store: Store, clock: Clock) -> ProviderMonitor:
    provider = config.provider
    thresholds = Thresholds(
        failure=provider.failure_threshold,
        success=provider.success_threshold,
        flap=provider.flap.thresholds(),
    )
    return ProviderMonitor(store, thresholds, clock, provider.check_policy())


def build_people(
    config: Config, directory: Callable[[], Directory], routes: Callable[[], Sequence[Route]]
) -> People:
    # channels are built once (a reload keeps them), so their audiences are too
    channel_audiences = audiences(config, primary_channels(config))
    return People(lambda: channel_audiences, directory, routes)


def build_dispatcher(
    config: Config,
    store: Store,
    channels: Mapping[str, Channel],
    monitor: ProviderMonitor,
    routes: Callable[[], Sequence[Route]],
    clock: Clock,
    renderer: Renderer,
    digest: Callable[[], str | None] = lambda: None,
) -> Dispatcher:
    """``digest``: of the routes in force, for the re-plans a reload owes (Rerouter.owe)."""
    return Dispatcher(
        store,
        channels,
        channel_policies(config),
        clock=clock,
        state=lambda: monitor.state,
        mode=lambda: monitor.mode,
        rerouter=Rerouter(store, routes, clock, lambda: monitor.state, digest),
        on_primary_failure=monitor.passive_failure,
        settings=DispatchSettings(
            poll_s=config.dispatch.poll.total_seconds(), lease_s=config.dispatch.lease.total_seconds()
        ),
        renderer=renderer,
        bounces=build_bounces(config),
    )


def build_bounces(config: Config) -> Bounces:
    """Reports to senders of relayed mail, in the name the SMTP intake greets its clients with."""
    smtp = config.intake.smtp
    if smtp is None:  # no smart host: no relayed mail, no one to report to
        return Bounces(enabled=False)
    return Bounces(enabled=smtp.bounces, reporter=smtp.greeting_name, from_address=smtp.report_from)


def build_leadership(
    config: Config, store: Store, monitor: ProviderMonitor, clock: Clock, dispatcher: Dispatcher
) -> Leadership | None:
    """HA (issue 8): on PostgreSQL one node leads; SQLite always leads alone (None)."""
    if not isinstance(config.store, PostgresStoreConfig):
        return None
    from daemon.leadership import Leadership  # psycopg only where PostgreSQL is configured
    from daemon.store.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    store.on_work(dispatcher.wake)
    return Leadership.from_config(config.store, store, monitor, clock)


def build_store_health(store: Store, clock: Clock, dispatcher: Dispatcher) -> StoreHealth:
    """Readiness's view of the store, fed by the dispatcher's passes (the acceptor's commits are
    the caller's to wire: the acceptor is built after this)."""
    health = StoreHealth(store, clock)
    dispatcher.on_store(lambda failure: health.heard(Proof.READ, failure))
    return health


def build_supervision(
    config: Config,
    systemd_env: Mapping[str, str] | None,
    status: Callable[[], Awaitable[str]],
    dispatcher: Dispatcher,
) -> Supervision:
    """systemd's view of the daemon, its watchdog fed by the dispatcher's passes."""
    poll_s = config.dispatch.poll.total_seconds()
    supervision = Supervision(systemd_env or {}, status, max(10.0, 5 * poll_s))
    dispatcher.on_pass(supervision.beat)
    return supervision


def feed_metrics(
    metrics: Metrics, dispatcher: Dispatcher, acceptor: Acceptor, monitor: ProviderMonitor
) -> None:
    """Feed ``metrics`` with the deliveries, the accepted notifications, the checks and the transitions."""
    dispatcher.on_outcome(metrics.delivery_outcome)
    acceptor.subscribe(metrics.notifications_accepted)
    monitor.on_check(metrics.check_result)
    monitor.on_transition(metrics.transition)


def build_announcer(
    config: Config, acceptor: Acceptor, store: Store, monitor: ProviderMonitor, clock: Clock
) -> Announcer:
    announcer = Announcer(acceptor, config.provider.name, store, clock)
    if config.provider.announce:
        monitor.on_transition(announcer.transition)
        monitor.on_lead(announcer.elected)
    return announcer


def build_drills(config: Config, store: Store, routes: Callable[[], Sequence[Route]], clock: Clock) -> Drills:
    return Drills(store, routes, lambda: primary_channels(config), clock)


def build_catchup(
    config: Config,
    store: Store,
    people: People,
    routes: Callable[[], Sequence[Route]],
    clock: Clock,
    dispatcher: Dispatcher,
    leads: Callable[[], bool],
    on_relayed: Callable[[int], None],
) -> CatchUp:
    # the channels are built once (a reload keeps them), so the primary ones are too
    primary, mail = primary_channels(config), mail_channels(config)
    return CatchUp(
        store,
        people,
        routes,
        lambda: primary,
        lambda: mail,
        clock,
        config.provider.name,
        in_flight=lambda: dispatcher.in_flight,
        leads=leads,
        on_relayed=on_relayed,
    )


def build_workers(
    config: Config,
    on_accepted: Callable[[Mapping[tuple[str, str], int], int], None],
    metrics: Metrics,
    buckets: SharedBuckets,
) -> IntakeWorkers | None:
    """The intake worker processes, if the configuration has them (None if not)."""
    settings = config.intake.workers
    if settings is None:
        return None
    source = config.source
    if source is None:
        raise RuntimeError("intake.workers needs the configuration read from a file or text")
    return IntakeWorkers(
        settings,
        source,
        on_accepted,
        on_count=metrics.intake_workers.set,
        on_turned_away=lambda limit, n: metrics.http_turned_away(INTAKE, limit, n),
        buckets_fd=buckets.fd,
    )
