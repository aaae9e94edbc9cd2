"""Rows to domain objects and back. Times are stored as epoch seconds (UTC)."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from daemon.core.flapping import FlapState
from daemon.core.health import HealthSnapshot, Transition
from daemon.core.model import (
    ACK_CODE_ALPHABET,
    ACK_CODE_LENGTH,
    RESOLVES_LABEL,
    CheckResult,
    CheckStatus,
    Delivery,
    DeliveryState,
    Escalation,
    EscalationStep,
    Mode,
    Notification,
    Plan,
    ProviderState,
    Severity,
)


def ts(at: datetime) -> float:
    return at.timestamp()


def dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def maybe_dt(value: float | None) -> datetime | None:
    return None if value is None else dt(value)


#: made once: ``json.dumps(..., sort_keys=True)`` builds an encoder for every call
_SORTED_JSON = json.JSONEncoder(sort_keys=True)


def notification_params(n: Notification) -> dict[str, Any]:
    return {
        "id": n.id,
        "idempotency_key": n.idempotency_key,
        "created_at": ts(n.created_at),
        "severity": n.severity.value,
        "subject": n.subject,
        "body": n.body,
        "source": n.source,
        "recipients": json.dumps(list(n.recipients)),
        "labels": _SORTED_JSON.encode(dict(n.labels)),
        "mail_from": n.mail_from,
        "raw": n.raw,
    }


def notification(row: sqlite3.Row | Mapping[str, Any]) -> Notification:
    return Notification(
        id=row["id"],
        idempotency_key=row["idempotency_key"],
        created_at=dt(row["created_at"]),
        severity=Severity(row["severity"]),
        subject=row["subject"],
        body=row["body"],
        source=row["source"],
        recipients=tuple(json.loads(row["recipients"])),
        labels=json.loads(row["labels"]),
        mail_from=row["mail_from"],
        raw=None if row["raw"] is None else bytes(row["raw"]),
    )


def delivery(row: sqlite3.Row | Mapping[str, Any]) -> Delivery:
    return Delivery(
        id=row["id"],
        notification_id=row["notification_id"],
        mode=cast(Mode, row["mode"]),
        route=row["route"],
        step=row["step"],
        channel=row["channel"],
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        next_attempt_at=maybe_dt(row["next_attempt_at"]),
        last_error=row["last_error"],
        digest=row["digest"],
    )


def remote_ids(kept: str | None, new: str | None) -> str | None:
    """A delivery's remote ids after another attempt: those it kept, then the new ones, once each.

    A send that reached some targets and was retried may post to them again after a restart (its
    channel's memory of what it posted is gone): both messages stay listed, so both are edited.
    """
    if not kept or not new:
        return new or kept
    return ",".join(dict.fromkeys(part for part in f"{kept},{new}".split(",") if part))


def snapshot_json(snapshot: HealthSnapshot) -> str:
    data = asdict(snapshot)
    for key in ("since", "forced_at", "last_passive_at"):
        data[key] = None if data[key] is None else ts(data[key])
    return json.dumps(data)


def snapshot(text: str) -> HealthSnapshot:
    data = json.loads(text)
    if not data:
        return HealthSnapshot()
    return HealthSnapshot(
        natural=ProviderState(data["natural"]),
        since=maybe_dt(data["since"]),
        failures=data["failures"],
        successes=data["successes"],
        forced=None if data["forced"] is None else ProviderState(data["forced"]),
        forced_reason=data["forced_reason"],
        last_passive_at=maybe_dt(data["last_passive_at"]),
        # later fields: rows written by an older release load with their defaults
        local=data.get("local", False),
        credentials=tuple(data.get("credentials", ())),
        flap=_flap(data.get("flap") or {}),
        held=data.get("held", False),
        forced_at=maybe_dt(data.get("forced_at")),
    )


def _flap(data: Mapping[str, Any]) -> FlapState:
    return FlapState(tuple(data.get("history", ())), data.get("percent", 0.0), data.get("flapping", False))


def transition(row: sqlite3.Row | Mapping[str, Any]) -> Transition:
    return Transition(
        at=dt(row["at"]),
        from_state=ProviderState(row["from_state"]),
        to_state=ProviderState(row["to_state"]),
        cause=row["cause"],
    )


def check_result(row: sqlite3.Row | Mapping[str, Any]) -> CheckResult:
    return CheckResult(
        check=row["check_name"],
        status=CheckStatus(row["status"]),
        reason=row["reason"],
        latency_s=row["latency_s"],
        at=dt(row["at"]),
    )


def plan(row: sqlite3.Row | Mapping[str, Any]) -> Plan:
    """The plan in force for a notification row."""
    mode, route = cast(Mode, row["mode"]), row["route"]
    if row["status"] == "held":
        return Plan(route=route, mode=mode, defer=True)
    if row["escalation"] is not None:
        return Plan(route=route, mode=mode, escalation=escalation(row["escalation"]))
    return Plan(route=route, mode=mode, steps=tuple(json.loads(row["plan"])))


def then(row: sqlite3.Row | Mapping[str, Any], step: int) -> tuple[str, ...]:
    """The failover list's channels after ``step`` of a notification row's plan (Claimed.then)."""
    if row["escalation"] is not None:
        return ()
    return tuple(json.loads(row["plan"])[step + 1 :])


def plan_columns(plan: Plan) -> dict[str, Any]:
    """The ``plan`` (every channel, in order) and ``escalation`` (its steps in time) columns."""
    steps = None
    if plan.escalation is not None:
        steps = [
            {"after_s": s.after.total_seconds(), "channels": list(s.channels)} for s in plan.escalation.steps
        ]
    return {
        "plan": json.dumps(list(plan.channels)),
        "escalation": None if steps is None else json.dumps(steps),
    }


def pinned_json(plans: Mapping[Mode, Plan]) -> str:
    """Both modes' plans of a notification planned here, not by the routes (``pinned``)."""
    return json.dumps({mode: _plan_json(plan) for mode, plan in plans.items()})


def pinned_plan(text: str, mode: Mode) -> Plan:
    """The plan for ``mode`` among a notification's pinned plans (:func:`pinned_json`)."""
    found = json.loads(text)[mode]
    route = found["route"]
    if found["defer"]:
        return Plan(route=route, mode=mode, defer=True)
    if found["escalation"] is not None:
        return Plan(route=route, mode=mode, escalation=escalation(found["escalation"]))
    return Plan(route=route, mode=mode, steps=tuple(found["steps"]))


def _plan_json(plan: Plan) -> dict[str, Any]:
    columns = plan_columns(plan)
    return {
        "route": plan.route,
        "defer": plan.defer,
        "steps": list(plan.steps),
        "escalation": columns["escalation"],
    }


def escalation(text: str) -> Escalation:
    return Escalation(
        tuple(EscalationStep(timedelta(seconds=s["after_s"]), tuple(s["channels"])) for s in json.loads(text))
    )


def open_ack_code(row: sqlite3.Row | Mapping[str, Any]) -> str | None:
    """The ack code of a notification whose escalation still waits for an acknowledgement."""
    if row["escalation"] is None or row["acknowledged_at"] is not None:
        return None
    return str(row["ack_code"])


#: draws of a code before giving up: with a billion codes, a tenth clash means the generator is broken
ACK_CODE_DRAWS = 10


def random_ack_code() -> str:
    """A fresh code from the OS's CSPRNG: unlike an id's end, it tells nothing about its neighbours."""
    return "".join(secrets.choice(ACK_CODE_ALPHABET) for _ in range(ACK_CODE_LENGTH))


def acknowledgeable(status: str, escalates: bool) -> bool:
    """Anything not yet sent may be acknowledged, and an escalation until it is cancelled."""
    return status in ("pending", "held") or (escalates and status != "cancelled")


def stale_step(n: sqlite3.Row | Mapping[str, Any], step_mode: str, mode: str) -> bool:
    """Whether a step back unsent stops: acknowledged, or an escalation's step of a mode no longer in
    force once another reached someone (as supersede_stale_escalations stops the pending ones)."""
    reached = n["escalation"] is not None and n["status"] not in ("pending", "held")
    return n["acknowledged_at"] is not None or (reached and step_mode != mode)


#: how a resolution acknowledges the notification it resolves (``ack_detail``: "via resolution")
RESOLUTION = "resolution"
#: how a newer version of an alert group closes the older ones ("via group update")
GROUP_UPDATE = "group update"


def may_acknowledge(escalates: bool, via: str) -> bool:
    """The people an escalation reaches stop it (Slack, SMS); anything else only an admin, by the
    API, the alert's own resolution, or a newer version of its group."""
    return escalates or via in ("api", RESOLUTION, GROUP_UPDATE)


def for_the_group(acknowledged_via: str | None, via: str) -> bool:
    """A person acknowledges a version a newer version of its group had closed (they were paged
    for it, the newer one may still page them): the acknowledgement is for the group's open
    versions, not answered "already"."""
    return acknowledged_via == GROUP_UPDATE and via not in (RESOLUTION, GROUP_UPDATE)


def same_incident(later: Sequence[tuple[str, Mapping[str, str]]]) -> list[str]:
    """Of the versions committed after an acknowledged one (oldest first: id and labels), those of
    the same incident: up to the group's resolution, after which the group firing again is news."""
    ids = []
    for notification_id, labels in later:
        if RESOLVES_LABEL in labels:
            break
        ids.append(notification_id)
    return ids


def ack_detail(by: str, via: str) -> str:
    return f"acknowledged by {by} via {via}"
