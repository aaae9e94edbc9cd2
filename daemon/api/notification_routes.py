"""The notification trail over HTTP: list and filter, read one with its delivery trail, cancel."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query

from daemon.api import views
from daemon.api.auth import BearerAuth
from daemon.clock import Clock
from daemon.core.model import Severity
from daemon.store.base import CancelResult, ListFilter, Store

NotificationStatusFilter = Literal["pending", "held", "delivered", "failed", "cancelled", "acknowledged"]


def notification_router(store: Store, clock: Clock, auth: BearerAuth) -> APIRouter:
    router = APIRouter()
    read, admin = Depends(auth.require("read")), Depends(auth.require("admin"))

    @router.get("/v1/notifications", tags=["notifications"], dependencies=[read])
    async def list_notifications(
        status: NotificationStatusFilter | None = None,
        severity: Severity | None = None,
        since: datetime | None = None,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """Newest first, filtered; pass ``next_cursor`` back as ``cursor`` for the next page."""
        if since is not None and since.tzinfo is None:
            raise HTTPException(422, "since needs a time zone, e.g. 2026-11-27T10:00:00Z")
        query = ListFilter(status, None if severity is None else severity.value, since, cursor, limit)
        return await _page(store, query)

    @router.post("/v1/notifications/{notification_id}/cancel", tags=["notifications"], dependencies=[admin])
    async def cancel(notification_id: str) -> dict[str, Any]:
        """Stop a notification not yet sent (pending or held); 409 if it is being sent or is finished."""
        return _cancelled(notification_id, await store.cancel(notification_id, clock.now()))

    @router.get("/v1/notifications/{notification_id}", tags=["notifications"], dependencies=[read])
    async def get_notification(notification_id: str) -> dict[str, Any]:
        """A notification, its status and its delivery trail."""
        view = await store.notification(notification_id)
        if view is None:
            raise HTTPException(404, f"no notification {notification_id}")
        return views.notification(view)

    return router


async def _page(store: Store, query: ListFilter) -> dict[str, Any]:
    found = await store.search(query)
    next_cursor = found[-1].notification.id if len(found) == query.limit else None
    return {"items": [views.notification(v) for v in found], "next_cursor": next_cursor}


def _cancelled(notification_id: str, result: CancelResult) -> dict[str, Any]:
    if result == "not_found":
        raise HTTPException(404, f"no notification {notification_id}")
    if result != "cancelled":
        reason = "it is being sent right now" if result == "in_flight" else "it is already finished"
        raise HTTPException(409, f"cannot cancel {notification_id}: {reason}")
    return {"id": notification_id, "status": "cancelled"}
