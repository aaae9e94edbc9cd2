"""JSON shapes of what the API returns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from daemon.core.health import Transition
from daemon.core.model import CheckResult, Delivery
from daemon.store.values import AttemptView, ChannelHealth, NotificationView, ProviderView, QueueView
from daemon.store_health import Failing


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat().replace("+00:00", "Z")


def notification(view: NotificationView) -> dict[str, Any]:
    n = view.notification
    return {
        "id": n.id,
        "idempotency_key": n.idempotency_key,
        "status": view.status,
        "severity": n.severity.value,
        "subject": n.subject,
        "source": n.source,
        "recipients": list(n.recipients),
        "labels": dict(n.labels),
        "created_at": iso(n.created_at),
        "route": view.route,
        "mode": view.mode,
        "plan": list(view.plan),
        "deliveries": [delivery(d) for d in view.deliveries],
        "attempts": [attempt(a) for a in view.attempts],
    }


def delivery(d: Delivery) -> dict[str, Any]:
    return {
        "channel": d.channel,
        "mode": d.mode,
        "step": d.step,
        "state": d.state.value,
        "attempts": d.attempts,
        "next_attempt_at": iso(d.next_attempt_at),
        "last_error": d.last_error,
    }


def attempt(a: AttemptView) -> dict[str, Any]:
    return {
        "delivery_id": a.delivery_id,
        "channel": a.channel,
        "attempt": a.attempt,
        "started_at": iso(a.started_at),
        "finished_at": iso(a.finished_at),
        "outcome": a.outcome,
        "detail": a.detail,
    }


def provider(name: str, view: ProviderView) -> dict[str, Any]:
    s = view.snapshot
    return {
        "name": name,
        "state": view.state.value,
        "mode": view.mode,
        "since": iso(s.state_since),
        "natural_state": s.natural.value,
        "forced": None if s.forced is None else {"state": s.forced.value, "reason": s.forced_reason},
        "consecutive_failures": s.failures,
        "consecutive_successes": s.successes,
        "events": [event(t) for t in view.events],
        "checks": [check(c) for c in view.checks],
    }


def event(t: Transition) -> dict[str, Any]:
    return {"at": iso(t.at), "from": t.from_state.value, "to": t.to_state.value, "cause": t.cause}


def check(c: CheckResult) -> dict[str, Any]:
    return {
        "check": c.check,
        "status": c.status.value,
        "reason": c.reason,
        "latency_s": round(c.latency_s, 4),
        "at": iso(c.at),
    }


def queue(view: QueueView, in_flight: int) -> dict[str, Any]:
    return {
        "notifications": dict(view.notifications),
        "deliveries": dict(view.deliveries),
        "oldest_pending_at": iso(view.oldest_pending_at),
        "sending_now": in_flight,
    }


def channel(c: ChannelHealth) -> dict[str, Any]:
    return {
        "channel": c.channel,
        "last_success_at": iso(c.last_success_at),
        "last_failure_at": iso(c.last_failure_at),
        "last_error": c.last_error,
        "consecutive_failures": c.consecutive_failures,
    }


def store(failing: Failing | None) -> dict[str, Any]:
    if failing is None:
        return {"state": "ok", "since": None, "reason": None}
    return {"state": "unavailable", "since": iso(failing.since_at), "reason": failing.reason}


def store_unavailable(failing: Failing) -> str:
    """The message of /healthz's 503 ``store_unavailable`` (both ports)."""
    return f"the store fails since {iso(failing.since_at)}: {failing.reason}"
