"""Failover drills: prove every backup channel works before the real outage needs it.

A drill sends one clearly labelled test message through each backup channel of the chosen routes
(the channels their ``outage`` plans name, the primary email excepted), whatever the provider's
state, without touching routing: each drill message has its own one-step plan in both modes.
Results are the drill messages' own delivery trails: delivered (Slack ok, Twilio accepted, and a
status callback if one came, webhook 2xx) or failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.clock import Clock
from daemon.core.model import Mode, Notification, Plan, Severity
from daemon.core.routing import Route, walk
from daemon.ids import new_id
from daemon.store.base import Store
from daemon.store.values import NewNotification, NotificationView

log = logging.getLogger(__name__)

SOURCE = "drill"


class DrillError(ValueError):
    """The drill cannot run as asked."""


@dataclass(frozen=True)
class ChannelResult:
    channel: str
    notification_id: str
    status: str  # pending, delivered, failed
    detail: str | None
    confirmed: bool  # the vendor confirmed delivery afterwards (e.g. a Twilio status callback)


@dataclass(frozen=True)
class LastDrill:
    started_at: datetime
    results: list[ChannelResult]


class Drills:
    def __init__(
        self,
        store: Store,
        routes: Callable[[], Sequence[Route]],
        primary: Callable[[], frozenset[str]],
        clock: Clock,
    ) -> None:
        self._store = store
        self._routes = routes
        self._primary = primary
        self._clock = clock

    def channels(self, route_names: Sequence[str] | None = None) -> list[str]:
        """The backup channels of the named routes (all routes when None), in plan order."""
        routes = self._routes()
        every = [route for _, route in walk(routes)]
        known = {r.name for r in every}
        unknown = sorted(set(route_names or ()) - known)
        if unknown:
            raise DrillError(f"unknown route(s): {', '.join(unknown)} (routes: {', '.join(sorted(known))})")
        chosen = [r for r in every if route_names is None or r.name in route_names]
        found = dict.fromkeys(ch for r in chosen for ch in (r.outage or ()) if ch not in self._primary())
        if not found:
            raise DrillError("the chosen routes have no backup channels to drill")
        return list(found)

    async def start(self, route_names: Sequence[str] | None = None) -> tuple[str, dict[str, str]]:
        """Queue one drill message per backup channel; returns the drill id and channel -> notification id."""
        now = self._clock.now()
        drill_id = "drill-" + new_id(now)
        items = []
        for channel in self.channels(route_names):
            notification = Notification(
                id=new_id(now),
                idempotency_key=f"{drill_id}:{channel}",
                created_at=now,
                severity=Severity.INFO,
                subject=f"Failover drill {drill_id}: testing channel {channel}",
                body="This is a scheduled test of backchannel's backup channels. No action is needed.",
                source=SOURCE,
                labels={"drill": drill_id, "drill_channel": channel},
            )
            plans: dict[Mode, Plan] = {
                "healthy": Plan(route="drill", mode="healthy", steps=(channel,)),
                "outage": Plan(route="drill", mode="outage", steps=(channel,)),
            }
            items.append(NewNotification(notification, plans, pinned=True))
        accepted = await self._store.accept(items, now)
        log.info(
            "drill %s started on %d channels",
            drill_id,
            len(items),
            extra={"event": "drill.started", "drill": drill_id},
        )
        return drill_id, {
            i.notification.labels["drill_channel"]: a.id for i, a in zip(items, accepted, strict=True)
        }

    async def results(self, drill_id: str) -> list[ChannelResult]:
        return [_result(view) for view in await self._store.drill(drill_id)]

    async def latest(self) -> LastDrill | None:
        """The latest drill, read from the store: so it survives a restart and every node agrees."""
        drill_id = await self._store.latest_drill()
        views = [] if drill_id is None else await self._store.drill(drill_id)
        if not views:
            return None
        return LastDrill(views[0].notification.created_at, [_result(view) for view in views])


def _result(view: NotificationView) -> ChannelResult:
    outcomes = [a.outcome for a in view.attempts]
    failure = next((a.detail for a in reversed(view.attempts) if a.outcome != "delivered"), None)
    return ChannelResult(
        channel=view.notification.labels["drill_channel"],
        notification_id=view.notification.id,
        status=view.status,
        detail=None if view.status == "delivered" and "callback:failed" not in outcomes else failure,
        confirmed="callback:delivered" in outcomes,
    )


#: a drill message's statuses after which nothing more happens to it
FINISHED = frozenset({"delivered", "failed", "cancelled", "acknowledged"})


def summary(drill_id: str, results: Sequence[ChannelResult]) -> dict[str, Any]:
    return {
        "drill": drill_id,
        "done": all(r.status in FINISHED for r in results),
        "ok": all(r.status == "delivered" for r in results),
        "channels": [
            {
                "channel": r.channel,
                "status": r.status,
                "detail": r.detail,
                "confirmed": r.confirmed,
                "notification_id": r.notification_id,
            }
            for r in results
        ],
    }
