"""The notification trail over HTTP: list and filter, read one with its delivery trail, cancel."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError

from daemon.api import views
from daemon.api.auth import BearerAuth
from daemon.api.errors import BEARER, token_errors
from daemon.api.models import CURSOR_PATTERN, Cancelled, NotificationOut, NotificationPage
from daemon.clock import Clock
from daemon.core.model import Severity
from daemon.store.base import Store
from daemon.store.values import CancelResult, ListFilter

NotificationState = Literal["pending", "held", "delivered", "failed", "cancelled", "acknowledged"]
#: what ``GET /v1/notifications`` understands; any other query parameter is a 422, not ignored
LIST_PARAMETERS = frozenset({"state", "status", "severity", "since", "cursor", "limit"})
#: pydantic reads a number as Unix time (seconds or milliseconds, guessed by its size): refused
_NUMBER = re.compile(r"\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*")
#: FastAPI documents a 422 for any operation with parameters: with the project's body, not its own
_BY_ID = {404: "No such notification", 422: "Invalid request"}


def notification_router(store: Store, clock: Clock, auth: BearerAuth) -> APIRouter:
    router = APIRouter(tags=["notifications"])
    read, admin = Depends(auth.require("read")), Depends(auth.require("admin"))

    @router.get(
        "/v1/notifications",
        dependencies=[read, Depends(_known_parameters)],
        response_model=NotificationPage,
        responses=token_errors(
            "read", {422: "A bad filter, an unknown query parameter or a malformed cursor"}
        ),
        openapi_extra=BEARER,
    )
    async def list_notifications(
        state: NotificationState | None = None,
        status: Annotated[
            NotificationState | None, Query(deprecated=True, description="the former name of `state`")
        ] = None,
        severity: Severity | None = None,
        since: Annotated[datetime | None, Query(description="created at or after, with a time zone")] = None,
        cursor: Annotated[
            str | None, Query(pattern=CURSOR_PATTERN, description="the previous page's `next_cursor`")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """Newest first, filtered; pass ``next_cursor`` back as ``cursor`` for the next page."""
        if state is not None and status is not None and state != status:
            raise HTTPException(422, "state and status (its former name) disagree: give one")
        if since is not None and since.tzinfo is None:
            raise HTTPException(422, "since needs a time zone, e.g. 2026-11-27T10:00:00Z")
        query = ListFilter(
            state or status, None if severity is None else severity.value, since, cursor, limit
        )
        return await _page(store, query)

    @router.post(
        "/v1/notifications/{notification_id}/cancel",
        dependencies=[admin],
        response_model=Cancelled,
        responses=token_errors("admin", _BY_ID | {409: "Being sent right now, or already finished"}),
        openapi_extra=BEARER,
    )
    async def cancel(notification_id: str) -> dict[str, Any]:
        """Stop a notification not yet sent (pending or held); 409 if it is being sent or is finished."""
        return _cancelled(notification_id, await store.cancel(notification_id, clock.now()))

    @router.get(
        "/v1/notifications/{notification_id}",
        dependencies=[read],
        response_model=NotificationOut,
        responses=token_errors(
            "read", _BY_ID | {500: "Stored by a release that this one cannot read (error `unreadable`)"}
        ),
        openapi_extra=BEARER,
    )
    async def get_notification(notification_id: str) -> dict[str, Any]:
        """A notification, its status and its delivery trail."""
        view = await store.notification(notification_id)
        if view is None:
            raise HTTPException(404, f"no notification {notification_id}")
        return views.notification(view)

    return router


async def _known_parameters(request: Request) -> None:
    """422 for a query parameter the list does not understand (a misspelt filter must not match
    all), given twice (``state=held&state=pending`` would otherwise keep only the last), or a
    ``since`` that is a bare number rather than an RFC 3339 date-time (read as Unix seconds or
    milliseconds, by its size)."""
    params = request.query_params
    known = ", ".join(sorted(LIST_PARAMETERS))
    errors = [
        {"type": "extra_forbidden", "loc": ("query", name), "msg": f"unknown; known: {known}"}
        for name in sorted(set(params) - LIST_PARAMETERS)
    ]
    errors += [
        {"type": "value_error", "loc": ("query", name), "msg": "given more than once; give it once"}
        for name in sorted(set(params) & LIST_PARAMETERS)
        if len(params.getlist(name)) > 1
    ]
    if _NUMBER.fullmatch(params.get("since", "")):
        errors.append(
            {
                "type": "value_error",
                "loc": ("query", "since"),
                "msg": "an RFC 3339 date-time with a time zone, e.g. 2026-11-27T10:00:00Z, not a number",
            }
        )
    if errors:
        raise RequestValidationError(errors)


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
