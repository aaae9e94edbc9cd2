"""The HTTP API (FastAPI): intake, notification trail, provider status and override."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daemon import __version__
from daemon.api.ack import OnAcknowledged, SlackApp, ack_router
from daemon.api.admission import Admission
from daemon.api.auth import BearerAuth, Grant
from daemon.api.callbacks import TwilioAccount, callback_router
from daemon.api.drill_routes import drill_router
from daemon.api.errors import (
    INTERNAL_ERROR,
    error_response,
    http_error,
    internal_error,
    not_leader,
    store_unavailable,
    unreadable,
    validation_error,
)
from daemon.api.limits import BodyLimit, BodyRefused
from daemon.api.models import SUBMIT_COMPONENTS
from daemon.api.notification_routes import notification_router
from daemon.api.provider_routes import override_router
from daemon.api.ratelimit import Buckets, LocalBuckets
from daemon.api.status_routes import health_router, status_router
from daemon.api.submit import PATH, SubmitEndpoint, openapi_operation
from daemon.api.webhooks import (
    SECURITY_SCHEMES,
    WebhookEndpoint,
    WebhookIntake,
    webhook_router,
)
from daemon.clock import Clock, SystemClock
from daemon.drills import Drills
from daemon.intake.accept import Acceptor
from daemon.intake.webhook_config import WebhookIntakesConfig, WebhookSettings
from daemon.metrics import Metrics
from daemon.monitor import ProviderMonitor
from daemon.store.base import NotLeader, Store, StoreUnavailable, Unreadable
from daemon.store_health import StoreHealth

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiContext:
    acceptor: Acceptor
    store: Store
    monitor: ProviderMonitor
    provider_name: str
    tokens: Callable[[], Mapping[str, str]]
    draining: Callable[[], bool]
    in_flight: Callable[[], int]
    #: False until the daemon has started everything (intake workers, SMTP intake): /healthz is 503
    started: Callable[[], bool] = lambda: True
    #: whether the store commits (/healthz, /v1/status, /metrics); None: one of the API's own,
    #: which hears of nothing but its probes
    store_health: StoreHealth | None = None
    max_body_bytes: int = 1 << 20
    #: the alert webhooks' (``api.max_alert_body_bytes``)
    max_alert_body_bytes: int = 16 << 20
    twilio_accounts: Callable[[], Sequence[TwilioAccount]] = tuple
    metrics: Metrics = field(default_factory=Metrics)
    drills: Drills | None = None
    grants: Callable[[], Mapping[str, Grant]] = dict
    #: where the tokens' rate limits are counted: the daemon's are shared with its intake workers
    buckets: Buckets = field(default_factory=LocalBuckets)
    webhooks: Callable[[], WebhookSettings] = WebhookIntakesConfig
    clock: Clock = field(default_factory=SystemClock)
    #: Slack channels whose app posts interactions (the Acknowledge button) to /v1/callbacks/slack
    slack_apps: Callable[[], Sequence[SlackApp]] = tuple
    #: told of every acknowledgement once committed (the Slack messages are edited to show it)
    on_acknowledged: OnAcknowledged = lambda *_: None
    #: the listener's limits, whose ``api.max_buffered_body_bytes`` the bodies are counted in
    admission: Admission | None = None


def create_api(ctx: ApiContext) -> BodyLimit:
    # A trailing slash is a 404 as on the workers' port, not a redirect to an http:// URL that a TLS
    # proxy in front would get wrong.
    api = FastAPI(
        title="backchannel", version=__version__, docs_url=None, redoc_url=None, redirect_slashes=False
    )
    api.add_exception_handler(RequestValidationError, validation_error)
    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_exception_handler(NotLeader, not_leader)
    api.add_exception_handler(StoreUnavailable, store_unavailable)
    api.add_exception_handler(Unreadable, unreadable)
    api.add_exception_handler(Exception, internal_error)
    authenticate = BearerAuth(ctx.tokens, ctx.grants, buckets=ctx.buckets)
    health = ctx.store_health or StoreHealth(ctx.store, ctx.clock)
    for router in _routers(ctx, authenticate, health):
        api.include_router(router)
    submit = SubmitEndpoint(ctx.acceptor, authenticate, ctx.draining)
    _document(api, submit_path=PATH)
    webhooks = WebhookIntake(ctx.acceptor, authenticate, ctx.draining, ctx.webhooks)
    api.include_router(webhook_router(webhooks))
    widen = webhooks.body_limit(ctx.max_body_bytes, ctx.max_alert_body_bytes)
    routed = _Router(submit, WebhookEndpoint(webhooks), api)
    return BodyLimit(routed, ctx.max_body_bytes, widen, admission=ctx.admission)


def _routers(ctx: ApiContext, authenticate: BearerAuth, health: StoreHealth) -> list[APIRouter]:
    """In matching order, which is also the OpenAPI document's: ``.../{id}/cancel`` before ``.../{id}``."""
    routers = [
        health_router(ctx.monitor, ctx.draining, ctx.started, health),
        notification_router(ctx.store, ctx.clock, authenticate),
        status_router(ctx, authenticate, health),
        override_router(ctx.monitor, authenticate),
        callback_router(ctx.store, ctx.twilio_accounts, ctx.clock),
        ack_router(
            ctx.store,
            authenticate.require("admin"),
            ctx.clock,
            ctx.slack_apps,
            ctx.twilio_accounts,
            ctx.on_acknowledged,
        ),
    ]
    if ctx.drills is not None:
        routers.append(drill_router(ctx.drills, authenticate))
    return routers


class _Router:
    """Sends ``POST /v1/notifications`` to the lean intake endpoint and everything else to FastAPI."""

    def __init__(self, submit: SubmitEndpoint, webhooks: WebhookEndpoint, api: FastAPI) -> None:
        self._submit = submit
        self._webhooks = webhooks
        self._api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] not in ("GET", "HEAD"):
            if scope["method"] == "POST":
                await _answering_bugs(self._submit, scope, receive, send)
            else:  # FastAPI knows the GET only, and would answer Allow: GET
                message = f"{scope['method']} is not allowed on {PATH}"
                await error_response(
                    405, "method_not_allowed", message, headers={"Allow": "GET, HEAD, POST"}
                )(scope, receive, send)
        elif self._webhooks.handles(scope):
            await _answering_bugs(self._webhooks, scope, receive, send)
        else:
            await self._api(scope, receive, send)


async def _answering_bugs(endpoint: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """A bug in a lean endpoint answered as FastAPI's exception handler answers one: the JSON
    error body (uvicorn's own is plain text), the traceback in the log."""
    started = False

    async def sending(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await endpoint(scope, receive, sending)
    except BodyRefused:  # too large or overloaded: answered by BodyLimit, no bug to log
        raise
    except Exception:
        if started:
            raise
        log.exception("request failed: %s %s", scope["method"], scope["path"])
        await error_response(500, "internal_error", INTERNAL_ERROR)(scope, receive, send)


def _document(api: FastAPI, submit_path: str) -> None:
    """Add the intake operation and the error body to FastAPI's OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = get_openapi(title=api.title, version=api.version, routes=api.routes)
            schema["paths"][submit_path] = openapi_operation() | schema["paths"].get(submit_path, {})
            components = schema.setdefault("components", {})
            schemas = components.setdefault("schemas", {})
            schemas["Error"] = ERROR_SCHEMA
            for name, definition in SUBMIT_COMPONENTS.items():
                if schemas.setdefault(name, definition) != definition:
                    raise RuntimeError(f"two OpenAPI schemas named {name!r} differ")
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
