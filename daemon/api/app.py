"""The HTTP API (FastAPI): intake, notification trail, provider status and override."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from daemon import __version__
from daemon.api import statuspage, views
from daemon.api.ack import OnAcknowledged, SlackApp, ack_router
from daemon.api.auth import BearerAuth, Forbidden, Grant, RateLimited, Unauthorized
from daemon.api.callbacks import TwilioAccount, callback_router
from daemon.api.drill_routes import drill_router
from daemon.api.errors import error_response, http_error, not_leader, validation_error
from daemon.api.limits import BodyLimit
from daemon.api.models import OverrideIn
from daemon.api.ratelimit import Buckets
from daemon.api.submit import PATH, SubmitEndpoint, openapi_operation
from daemon.api.webhooks import SECURITY_SCHEMES, WebhookEndpoint, WebhookIntake, webhook_router
from daemon.clock import Clock, SystemClock
from daemon.core.model import ProviderState, Severity
from daemon.drills import Drills, summary
from daemon.intake.accept import Acceptor
from daemon.intake.webhook_config import WebhookIntakesConfig, WebhookSettings
from daemon.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from daemon.metrics import Metrics
from daemon.monitor import ProviderMonitor
from daemon.store.base import ListFilter, NotLeader, Store

RETRY_AFTER_S = "5"
NotificationStatusFilter = Literal["pending", "held", "delivered", "failed", "cancelled", "acknowledged"]


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
    twilio_accounts: Callable[[], Sequence[TwilioAccount]] = tuple
    metrics: Metrics = field(default_factory=Metrics)
    drills: Drills | None = None
    grants: Callable[[], Mapping[str, Grant]] = dict
    #: where the tokens' rate limits are counted: shared with the intake workers (None: here only)
    buckets: Buckets | None = None
    webhooks: Callable[[], WebhookSettings] = WebhookIntakesConfig
    clock: Clock = field(default_factory=SystemClock)
    #: Slack channels whose app posts interactions (the Acknowledge button) to /v1/callbacks/slack
    slack_apps: Callable[[], Sequence[SlackApp]] = tuple
    #: told of every acknowledgement once committed (the Slack messages are edited to show it)
    on_acknowledged: OnAcknowledged = lambda *_: None


def create_api(ctx: ApiContext) -> BodyLimit:
    api = FastAPI(title="backchannel", version=__version__, docs_url=None, redoc_url=None)
    api.add_exception_handler(RequestValidationError, validation_error)
    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_exception_handler(NotLeader, not_leader)
    authenticate = BearerAuth(ctx.tokens, ctx.grants, buckets=ctx.buckets)
    read, admin = Depends(authenticate.require("read")), Depends(authenticate.require("admin"))

    @api.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        """Liveness for load balancers: 503 while draining."""
        if ctx.draining():
            return error_response(503, "draining", "shutting down", headers={"Retry-After": RETRY_AFTER_S})
        return JSONResponse({"status": "ok", "provider": ctx.monitor.state.value})

    @api.get("/v1/notifications", tags=["notifications"], dependencies=[read])
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
        found = await ctx.store.search(query)
        next_cursor = found[-1].notification.id if len(found) == limit else None
        return {"items": [views.notification(v) for v in found], "next_cursor": next_cursor}

    @api.post("/v1/notifications/{notification_id}/cancel", tags=["notifications"], dependencies=[admin])
    async def cancel(notification_id: str) -> dict[str, Any]:
        """Stop a notification not yet sent (pending or held); 409 if it is being sent or is finished."""
        result = await ctx.store.cancel(notification_id, ctx.clock.now())
        if result == "not_found":
            raise HTTPException(404, f"no notification {notification_id}")
        if result != "cancelled":
            reason = "it is being sent right now" if result == "in_flight" else "it is already finished"
            raise HTTPException(409, f"cannot cancel {notification_id}: {reason}")
        return {"id": notification_id, "status": "cancelled"}

    @api.get("/v1/notifications/{notification_id}", tags=["notifications"], dependencies=[read])
    async def get_notification(notification_id: str) -> dict[str, Any]:
        """A notification, its status and its delivery trail."""
        view = await ctx.store.notification(notification_id)
        if view is None:
            raise HTTPException(404, f"no notification {notification_id}")
        return views.notification(view)

    @api.get("/v1/status", tags=["operations"], dependencies=[read])
    async def status() -> dict[str, Any]:
        """The provider's state and why, its recent transitions and checks, and the queue."""
        provider = await ctx.store.provider()
        queue = await ctx.store.queue()
        channels = await ctx.store.channel_health()
        return {
            "version": __version__,
            "provider": views.provider(ctx.provider_name, provider),
            "queue": views.queue(queue, ctx.in_flight()),
            "channels": [views.channel(c) for c in channels],
            "explain": ctx.monitor.explain().as_dict(),
            "last_drill": await _last_drill(ctx),
            "nodes": await _nodes(ctx),
        }

    @api.get("/", tags=["operations"], response_class=HTMLResponse)
    async def status_page(request: Request) -> Response:
        """The live status page: HTTP Basic (any user, an API token as password) or a bearer token."""
        try:
            authenticate.authorize(request.headers.get("authorization", ""), "read", basic=True)
        except (Unauthorized, Forbidden, RateLimited):
            return error_response(
                401,
                "unauthorized",
                "sign in with an API token",
                headers={"WWW-Authenticate": 'Basic realm="backchannel"'},
            )
        return HTMLResponse(statuspage.render(await _page_data(ctx)))

    @api.get("/metrics", tags=["operations"], dependencies=[read], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics (text exposition format); scrape with the bearer token."""
        body = ctx.metrics.render(
            ctx.monitor.state, await ctx.store.queue(), await ctx.store.channel_health(), ctx.clock.now()
        )
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    @api.post("/v1/provider/override", tags=["operations"], dependencies=[admin])
    async def override(body: OverrideIn) -> dict[str, Any]:
        """Force the provider's state (e.g. declare an outage the checks have not seen)."""
        await ctx.monitor.force(ProviderState(body.state), body.reason)
        return {"state": ctx.monitor.state.value, "forced": body.state}

    @api.delete("/v1/provider/override", tags=["operations"], dependencies=[admin])
    async def release() -> dict[str, Any]:
        """Release an override; the state returns to what the checks say."""
        await ctx.monitor.release()
        return {"state": ctx.monitor.state.value, "forced": None}

    api.include_router(callback_router(ctx.store, ctx.twilio_accounts, ctx.clock))
    acks = ack_router(
        ctx.store,
        authenticate.require("admin"),
        ctx.clock,
        ctx.slack_apps,
        ctx.twilio_accounts,
        ctx.on_acknowledged,
    )
    api.include_router(acks)
    if ctx.drills is not None:
        api.include_router(drill_router(ctx.drills, authenticate))
    submit = SubmitEndpoint(ctx.acceptor, authenticate, ctx.draining)
    _document(api, submit_path=PATH)
    webhooks = WebhookIntake(ctx.acceptor, ctx.tokens, ctx.draining, ctx.webhooks, authenticate)
    api.include_router(webhook_router(webhooks))
    return BodyLimit(_Router(submit, WebhookEndpoint(webhooks), api), ctx.max_body_bytes)


async def _page_data(ctx: ApiContext) -> statuspage.PageData:
    now = ctx.clock.now()
    events, checks = await ctx.store.history(now - statuspage.WINDOW)
    return statuspage.PageData(
        provider_name=ctx.provider_name,
        provider=await ctx.store.provider(events=1, checks=0),
        events=events,
        checks=checks,
        queue=await ctx.store.queue(),
        channels=await ctx.store.channel_health(),
        drill=await _last_drill(ctx),
        recent=await ctx.store.recent(50),
        now=now,
    )


async def _nodes(ctx: ApiContext) -> list[dict[str, Any]]:
    """With PostgreSQL: every node of the last hour, its role and its latest check results."""
    nodes_of = getattr(ctx.store, "nodes", None)  # only the PostgreSQL store has several nodes
    if nodes_of is None:
        return []
    nodes = await nodes_of(ctx.clock.now() - timedelta(hours=1))
    return [{"node": n.node, "role": n.role, "checks": [views.check(c) for c in n.checks]} for n in nodes]


async def _last_drill(ctx: ApiContext) -> dict[str, Any] | None:
    drill_id = await ctx.store.latest_drill()
    if drill_id is None or ctx.drills is None:
        return None
    return summary(drill_id, await ctx.drills.results(drill_id))


class _Router:
    """Sends ``POST /v1/notifications`` to the lean intake endpoint and everything else to FastAPI."""

    def __init__(self, submit: SubmitEndpoint, webhooks: WebhookEndpoint, api: FastAPI) -> None:
        self._submit = submit
        self._webhooks = webhooks
        self._api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == PATH:
            await self._submit(scope, receive, send)
        elif self._webhooks.handles(scope):
            await self._webhooks(scope, receive, send)
        else:
            await self._api(scope, receive, send)


def _document(api: FastAPI, submit_path: str) -> None:
    """Add the intake operation and the error body to FastAPI's OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version=api.version, routes=api.routes)
            schema["paths"][submit_path] = openapi_operation() | schema["paths"].get(submit_path, {})
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
            components["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                **SECURITY_SCHEMES,
            }
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "a stable code, e.g. invalid_request, unauthorized"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
}
