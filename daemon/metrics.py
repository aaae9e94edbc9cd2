"""Prometheus metrics: what backchannel does, and whether backchannel itself is in trouble.

Counters and histograms are fed by the components' event listeners; gauges that describe the
outbox (queue depth, oldest pending age, per-channel failure streaks) and the last drill are read
from the store at scrape time, so they are true even after a restart. While the store cannot be
read (PostgreSQL unreachable, say) a scrape still answers, with ``backchannel_store_up 0`` and
without those gauges (a store that can be read but not commit, a full disk, shows them):
Prometheus marks their series stale instead of keeping values nobody read, and the alert on
``backchannel_store_up`` fires, where a failed scrape would only say the daemon is down.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from channels.base import ChannelError
from daemon.api.admission import LIMITS, LISTENERS
from daemon.core.health import Transition
from daemon.core.model import CheckResult, Notification, ProviderState
from daemon.drills import FINISHED, LastDrill
from daemon.metrics_collectors import Refusals, WhileRead
from daemon.store.values import Accepted, ChannelHealth, Claimed, Outcome, QueueView

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)
CHECK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: the ``source`` label is chosen by the senders: this many distinct values get series of their
#: own, later ones are counted as OTHER_SOURCE (each series lives as long as the daemon, here and
#: in Prometheus)
MAX_SOURCES = 100
OTHER_SOURCE = "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # declared area by area, in the order the exposition lists them
        self._declare_intake(self.registry)
        self._declare_delivery(self.registry)
        self._declare_provider(self.registry)
        #: the gauges read from the store, exported only when the last scrape could read it
        self._read = WhileRead(CollectorRegistry())
        self._declare_outbox(self._read.registry)
        self._declare_drills(self._read.registry)
        self.registry.register(self._read)
        self._declare_operations(self.registry)

    def _declare_intake(self, r: CollectorRegistry) -> None:
        """What the senders submitted."""
        self.accepted = Counter(
            "backchannel_notifications_accepted",
            "Notifications committed to the outbox",
            ["severity", "source"],
            registry=r,
        )
        # the labelled child per (severity, source): labels() costs more than inc() on the intake path
        self._accepted_by: dict[tuple[str, str], Counter] = {}
        #: sources with series of their own (OTHER_SOURCE is always one, beside MAX_SOURCES others)
        self._sources: set[str] = {OTHER_SOURCE}
        self.duplicates = Counter(
            "backchannel_notifications_duplicate",
            "Submissions answered with an earlier notification",
            registry=r,
        )
        self.turned_away = Counter(
            "backchannel_http_turned_away",
            "HTTP connections and requests answered 503 for load, by listener and by the api.* limit",
            ["listener", "limit"],
            registry=r,
        )
        for listener in LISTENERS:  # at 0 from the start: see the reloads' below
            for limit in LIMITS:
                self.turned_away.labels(listener, limit)

    def _declare_delivery(self, r: CollectorRegistry) -> None:
        """The sends: their outcomes, how long they took, and the channels' Retry-Afters."""
        self.attempts = Counter(
            "backchannel_delivery_attempts",
            "Send attempts by outcome (delivered, retry, failed)",
            ["channel", "severity", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "backchannel_delivery_latency_seconds",
            "From acceptance to delivery",
            ["channel", "severity"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.send_duration = Histogram(
            "backchannel_send_duration_seconds",
            "How long one send took",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            "backchannel_rate_limited",
            "Sends the channel answered with a Retry-After",
            ["channel"],
            registry=r,
        )

    def _declare_provider(self, r: CollectorRegistry) -> None:
        """The provider's health: check results and the state they lead to."""
        self.checks = Counter("backchannel_checks", "Check results", ["check", "status"], registry=r)
        self.check_latency = Histogram(
            "backchannel_check_latency_seconds",
            "Check duration",
            ["check"],
            buckets=CHECK_BUCKETS,
            registry=r,
        )
        self.provider_state = Gauge(
            "backchannel_provider_state", "1 for the provider's current state", ["state"], registry=r
        )
        self.transitions = Counter(
            "backchannel_provider_transitions", "Provider state transitions", ["to_state"], registry=r
        )
        for state in ProviderState:
            self.transitions.labels(state.value)

    def _declare_outbox(self, r: CollectorRegistry) -> None:
        """The outbox and the channels' failure streaks, set from the store at scrape time."""
        self.queue = Gauge(
            "backchannel_queue_notifications", "Notifications by status", ["status"], registry=r
        )
        self.deliveries = Gauge(
            "backchannel_queue_deliveries", "Deliveries waiting or being sent", ["state"], registry=r
        )
        self.oldest_pending = Gauge(
            "backchannel_oldest_pending_age_seconds",
            "Age of the oldest pending or held notification",
            registry=r,
        )
        self.channel_failures = Gauge(
            "backchannel_channel_consecutive_failures",
            "Failed attempts since the channel's last success",
            ["channel"],
            registry=r,
        )
        self.channel_last_success = Gauge(
            "backchannel_channel_last_success_timestamp_seconds",
            "Last delivery through the channel",
            ["channel"],
            registry=r,
        )

    def _declare_drills(self, r: CollectorRegistry) -> None:
        """The last drill, as the store has it."""
        self.drill_success = Gauge(
            "backchannel_drill_success",
            "1 if the last drill reached the channel, else 0",
            ["channel"],
            registry=r,
        )
        self.drill_timestamp = Gauge(
            "backchannel_drill_timestamp_seconds", "When the last drill ran", registry=r
        )

    def _declare_operations(self, r: CollectorRegistry) -> None:
        """The daemon itself: configuration reloads, intake workers, its store."""
        self.reloads = Counter(
            "backchannel_config_reloads",
            "Configuration reloads by result (ok, rejected)",
            ["result"],
            registry=r,
        )
        # Exported at 0 from the start, as are the transitions: Prometheus' increase() sees no
        # increase in a series whose first sample is already 1, so the first rejected reload (or the
        # first outage) after a start would raise no alert
        for result in ("ok", "rejected"):
            self.reloads.labels(result)
        self.intake_workers = Gauge(
            "backchannel_intake_workers", "Intake worker processes serving (intake.workers)", registry=r
        )
        #: registered by watch_leadership(): only nodes that share a store have a leader
        self.leader = Gauge(
            "backchannel_leader", "1 while this node leads the nodes sharing its store, else 0", registry=None
        )
        self.pruned = Counter(
            "backchannel_notifications_pruned",
            "Finished notifications deleted past store.retention (the leader's retention runs)",
            registry=r,
        )
        self.prune_failures = Counter(
            "backchannel_prune_failures", "Retention runs the store failed (tried again next run)", registry=r
        )
        self.relayed_after_outage = Counter(
            "backchannel_mail_relayed_after_outage",
            "Smart-host messages relayed by email after an outage they went to backup channels in",
            registry=r,
        )
        self.store_up = Gauge(
            "backchannel_store_up",
            "1 while the store commits, 0 while it fails (intake and /healthz answer 503 store_unavailable)",
            registry=r,
        )

    # -- listeners ----------------------------------------------------------------------------------

    def notifications_accepted(
        self, notifications: Sequence[Notification], accepted: Sequence[Accepted]
    ) -> None:
        for notification, result in zip(notifications, accepted, strict=True):
            if result.duplicate:
                self.duplicates.inc()
            else:
                self._accepted_child((notification.severity.value, notification.source)).inc()

    def accepted_counts(self, counts: Mapping[tuple[str, str], int], duplicates: int) -> None:
        """What an intake worker committed: (severity, source) to a count, and the duplicates."""
        for key, n in counts.items():
            self._accepted_child(key).inc(n)
        if duplicates:
            self.duplicates.inc(duplicates)

    def _accepted_child(self, key: tuple[str, str]) -> Counter:
        child = self._accepted_by.get(key)
        if child is None:
            severity, source = key
            if source not in self._sources:
                if len(self._sources) > MAX_SOURCES:  # not remembered by its own name: bounded memory
                    return self._accepted_child((severity, OTHER_SOURCE))
                self._sources.add(source)
            child = self._accepted_by[key] = self.accepted.labels(*key)
        return child

    def http_turned_away(self, listener: str, limit: str, count: int = 1) -> None:
        """``count`` connections or requests refused by ``listener``'s ``limit`` (daemon.api.admission)."""
        self.turned_away.labels(listener, limit).inc(count)

    def delivery_outcome(
        self, channel: str, claimed: Claimed, outcome: Outcome, error: ChannelError | None
    ) -> None:
        severity = claimed.notification.severity.value
        self.attempts.labels(channel, severity, outcome.kind).inc()
        self.send_duration.labels(channel).observe((outcome.finished_at - outcome.started_at).total_seconds())
        if outcome.kind == "delivered":
            age = (outcome.finished_at - claimed.notification.created_at).total_seconds()
            self.latency.labels(channel, severity).observe(max(0.0, age))
        if error is not None and error.retry_after_s is not None:
            self.rate_limited.labels(channel).inc()

    def check_result(self, result: CheckResult) -> None:
        self.checks.labels(result.check, result.status.value).inc()
        self.check_latency.labels(result.check).observe(result.latency_s)

    def transition(self, transition: Transition) -> None:
        self.transitions.labels(transition.to_state.value).inc()

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "rejected").inc()

    def watch_leadership(self) -> None:
        """``backchannel_leader`` on PostgreSQL (on SQLite every daemon decides alone)."""
        self.registry.register(self.leader)

    def watch_rate_limits(self, refused: Callable[[], Mapping[str, int]]) -> None:
        """``backchannel_api_rate_limited_total{token}``: the tokens' 429s on every port, read at
        scrape time from the buckets the daemon shares with its intake workers."""
        self.registry.register(Refusals(refused))

    # -- scrape -------------------------------------------------------------------------------------

    def render(
        self, state: ProviderState, now: datetime, read: StoreRead | None, *, up: bool, leading: bool = True
    ) -> bytes:
        """The exposition; ``read``: what the store answered, None if unread (its gauges left out);
        ``up``: whether the store commits (a full disk can still be read: its gauges are shown and
        the store is down); ``leading``: whether this node leads (watch_leadership)."""
        for s in ProviderState:
            self.provider_state.labels(s.value).set(1 if s == state else 0)
        self.leader.set(1 if leading else 0)
        self._read.shown = read is not None
        self.store_up.set(1 if up and read is not None else 0)
        if read is None:
            return generate_latest(self.registry)
        queue = read.queue
        for status in ("pending", "held", "delivered", "failed"):
            self.queue.labels(status).set(queue.notifications.get(status, 0))
        for delivery_state in ("pending", "in_flight"):
            self.deliveries.labels(delivery_state).set(queue.deliveries.get(delivery_state, 0))
        oldest = queue.oldest_pending_at
        self.oldest_pending.set(0 if oldest is None else max(0.0, (now - oldest).total_seconds()))
        for health in read.channels:
            self.channel_failures.labels(health.channel).set(health.consecutive_failures)
            if health.last_success_at is not None:
                self.channel_last_success.labels(health.channel).set(health.last_success_at.timestamp())
        if read.drill is not None:
            self._drilled(read.drill)
        return generate_latest(self.registry)

    def _drilled(self, drill: LastDrill) -> None:
        """The latest drill as the store has it, not as this process saw it: a restart, or a drill
        another node started, would otherwise leave the timestamp at 0 and the results unknown."""
        self.drill_timestamp.set(drill.started_at.timestamp())
        for result in drill.results:
            if result.status in FINISHED:
                self.drill_success.labels(result.channel).set(1 if result.status == "delivered" else 0)


@dataclass(frozen=True)
class StoreRead:
    """What a scrape read from the store."""

    queue: QueueView
    channels: Sequence[ChannelHealth]
    drill: LastDrill | None = None
