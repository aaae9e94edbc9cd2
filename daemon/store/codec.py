"""Rows to domain objects and back. Times are stored as epoch seconds (UTC)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, cast

from daemon.core.flapping import FlapState
from daemon.core.health import HealthSnapshot, Transition
from daemon.core.model import (
    CheckResult,
    CheckStatus,
    Delivery,
    DeliveryState,
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
        "labels": json.dumps(dict(n.labels), sort_keys=True),
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
    )


def snapshot_json(snapshot: HealthSnapshot) -> str:
    data = asdict(snapshot)
    for key in ("since", "last_passive_at"):
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
    if row["status"] == "held":
        return Plan(route=row["route"], mode=cast(Mode, row["mode"]), defer=True)
    return Plan(route=row["route"], mode=cast(Mode, row["mode"]), steps=tuple(json.loads(row["plan"])))
