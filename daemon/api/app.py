"""The HTTP API (FastAPI): intake, notification trail, provider status and override."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from daemon import __version__
from daemon.api import views
from daemon.api.auth import bearer_auth
from daemon.api.errors import error_response, http_error, validation_error
from daemon.api.limits import BodyLimit
from daemon.api.models import NotificationBatch, NotificationIn, OverrideIn
from daemon.core.model import ProviderState
from daemon.intake.accept import Acceptor, Submission
from daemon.monitor import ProviderMonitor
from daemon.store.base import Store, StoreUnavailable

RETRY_AFTER_S = "5"


@dataclass(frozen=True)
class ApiContext:
    acceptor: Acceptor
    store: Store
    monitor: ProviderMonitor
    provider_name: str
    tokens: Callable[[], Mapping[str, str]]
    draining: Callable[[], bool]
    in_flight: Callable[[], int]
    max_body_bytes: int = 1 << 20


def create_api(ctx: ApiContext) -> BodyLimit:
    api = FastAPI(title="backchannel", version=__version__, docs_url=None, redoc_url=None)
    api.add_exception_handler(RequestValidationError, validation_error)
    api.add_exception_handler(StarletteHTTPException, http_error)
    auth = Depends(bearer_auth(ctx.tokens))

    @api.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        """Liveness for load balancers: 503 while draining."""
        if ctx.draining():
            return error_response(503, "draining", "shutting down", headers={"Retry-After": RETRY_AFTER_S})
        return JSONResponse({"status": "ok", "provider": ctx.monitor.state.value})

    @api.post("/v1/notifications", status_code=202, tags=["notifications"], dependencies=[auth])
    async def submit(
        body: NotificationIn | NotificationBatch,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> JSONResponse:
        """Accept one notification, or up to 1,000 in one durable commit."""
        if ctx.draining():
            return error_response(503, "draining", "shutting down", headers={"Retry-After": RETRY_AFTER_S})
        batch = isinstance(body, list)
        if batch and idempotency_key is not None:
            return error_response(
                422, "invalid_request", "Idempotency-Key header applies to one notification"
            )
        items = body if isinstance(body, list) else [body]
        submissions = [_submission(item, None if batch else idempotency_key) for item in items]
        try:
            accepted = await ctx.acceptor.accept(submissions)
        except StoreUnavailable as exc:
            return error_response(503, "store_unavailable", str(exc), headers={"Retry-After": RETRY_AFTER_S})
        if batch:
            return JSONResponse(
                {"ids": [a.id for a in accepted], "duplicates": [a.id for a in accepted if a.duplicate]},
                status_code=202,
            )
        (one,) = accepted
        headers = {"Idempotent-Replayed": "true"} if one.duplicate else None
        return JSONResponse({"id": one.id, "duplicate": one.duplicate}, status_code=202, headers=headers)

    @api.get("/v1/notifications/{notification_id}", tags=["notifications"], dependencies=[auth])
    async def get_notification(notification_id: str) -> dict[str, Any]:
        """A notification, its status and its delivery trail."""
        view = await ctx.store.notification(notification_id)
        if view is None:
            raise HTTPException(404, f"no notification {notification_id}")
        return views.notification(view)

    @api.get("/v1/status", tags=["operations"], dependencies=[auth])
    async def status() -> dict[str, Any]:
        """The provider's state and why, its recent transitions and checks, and the queue."""
        provider = await ctx.store.provider()
        queue = await ctx.store.queue()
        return {
            "version": __version__,
            "provider": views.provider(ctx.provider_name, provider),
            "queue": views.queue(queue, ctx.in_flight()),
        }

    @api.post("/v1/provider/override", tags=["operations"], dependencies=[auth])
    async def override(body: OverrideIn) -> dict[str, Any]:
        """Force the provider's state (e.g. declare an outage the checks have not seen)."""
        await ctx.monitor.force(ProviderState(body.state), body.reason)
        return {"state": ctx.monitor.state.value, "forced": body.state}

    @api.delete("/v1/provider/override", tags=["operations"], dependencies=[auth])
    async def release() -> dict[str, Any]:
        """Release an override; the state returns to what the checks say."""
        await ctx.monitor.release()
        return {"state": ctx.monitor.state.value, "forced": None}

    return BodyLimit(api, ctx.max_body_bytes)


def _submission(item: NotificationIn, header_key: str | None) -> Submission:
    return Submission(
        severity=item.severity,
        subject=item.subject,
        body=item.body,
        source=item.source,
        recipients=tuple(item.recipients),
        labels=item.labels,
        idempotency_key=item.idempotency_key or header_key,
    )
