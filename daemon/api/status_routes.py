"""The daemon's state over HTTP: readiness (/healthz), the status document and page, Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from daemon import __version__
from daemon.api import statuspage, views
from daemon.api.auth import BearerAuth, Forbidden, RateLimited, Unauthorized, refusal
from daemon.api.errors import (
    BEARER,
    BEARER_OR_BASIC,
    RETRY_AFTER_S,
    error_response,
    error_responses,
    token_errors,
)
from daemon.api.status_models import HealthOut, StatusOut
from daemon.drills import summary
from daemon.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from daemon.metrics import StoreRead
from daemon.monitor import ProviderMonitor
from daemon.store.base import StoreUnavailable
from daemon.store.values import ProviderView, QueueView
from daemon.store_health import Proof, StoreHealth

if TYPE_CHECKING:
    from daemon.api.app import ApiContext

T = TypeVar("T")
STARTING_RETRY_S = "1"
#: while the store is known to fail, a scrape waits this long for its reads, then answers without
READ_WHILE_FAILING_S = 1.0
_HEALTH_RESPONSES = error_responses(
    {
        503: "Not ready (Retry-After): `starting` (not every intake serves yet), `draining`, or "
        "`store_unavailable` (the store does not commit: every intake would answer 503)"
    }
)
#: the status page never answers 403: a token without the read scope is asked to sign in again;
#: nor 503: while the store cannot be read it shows the provider as this process holds it
_PAGE_RESPONSES = error_responses(
    {
        401: "Sign in: HTTP Basic (any user, an API token with the read scope as password)",
        429: "The token is over its rate limit (Retry-After)",
    }
)
#: the status document's and the metrics' answers: no 503, they answer while the store cannot be
#: read (the metrics so that the alert on the store fires)
_READ_RESPONSES = {status: answer for status, answer in token_errors("read").items() if status != "503"}
_METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {
    "200": {
        "description": "Prometheus text exposition format; while the store cannot be read, "
        "`backchannel_store_up 0` and none of the gauges read from the store",
        "content": {METRICS_CONTENT_TYPE: {"schema": {"type": "string"}}},
    },
    **_READ_RESPONSES,
}


def health_router(
    monitor: ProviderMonitor,
    draining: Callable[[], bool],
    started: Callable[[], bool],
    store: StoreHealth,
) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", tags=["operations"], response_model=HealthOut, responses=_HEALTH_RESPONSES)
    async def healthz() -> JSONResponse:
        """Readiness for load balancers: 503 while starting (until every intake serves), draining,
        or while the store does not commit."""
        if draining():
            return error_response(503, "draining", "shutting down", headers={"Retry-After": RETRY_AFTER_S})
        if not started():
            return error_response(503, "starting", "starting up", headers={"Retry-After": STARTING_RETRY_S})
        failing = await store.verdict()
        if failing is not None:
            message = views.store_unavailable(failing)
            return error_response(503, "store_unavailable", message, headers={"Retry-After": RETRY_AFTER_S})
        return JSONResponse({"status": "ok", "provider": monitor.state.value})

    # Some load balancers check with HEAD: the same status and headers (the server drops the body).
    # Not in the OpenAPI document, which describes the GET.
    router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
    return router


def status_router(ctx: ApiContext, auth: BearerAuth, store: StoreHealth) -> APIRouter:
    router = APIRouter()
    read = Depends(auth.require("read"))

    @router.get(
        "/v1/status",
        tags=["operations"],
        dependencies=[read],
        response_model=StatusOut,
        responses=_READ_RESPONSES,
        openapi_extra=BEARER,
    )
    async def status() -> dict[str, Any]:
        """The provider's state and why, its recent transitions and checks, and the queue."""
        return await _status(ctx, store)

    @router.get(
        "/",
        tags=["operations"],
        response_class=HTMLResponse,
        responses=_PAGE_RESPONSES,
        openapi_extra=BEARER_OR_BASIC,
    )
    async def status_page(request: Request) -> Response:
        """The live status page: HTTP Basic (any user, an API token as password) or a bearer token."""
        try:
            auth.authorize(request.headers.get("authorization", ""), "read", basic=True)
        except (Unauthorized, Forbidden):
            return _sign_in()
        except RateLimited as exc:
            status, code, headers = refusal(exc, "Bearer")
            return error_response(status, code, str(exc), headers=headers)
        data = await _unless_down(store, lambda: _page_data(ctx))
        return HTMLResponse(statuspage.render(data or _unread_page(ctx)))

    @router.get(
        "/metrics",
        tags=["operations"],
        dependencies=[read],
        response_class=Response,
        responses=_METRICS_RESPONSES,
        openapi_extra=BEARER,
    )
    async def metrics() -> Response:
        """Prometheus metrics (text exposition format); scrape with the bearer token."""
        read = await _unless_down(store, lambda: _scrape_reads(ctx))
        body = ctx.metrics.render(
            ctx.monitor.state, ctx.clock.now(), read, up=store.failing is None, leading=ctx.monitor.leading
        )
        return Response(body, media_type=METRICS_CONTENT_TYPE)

    return router


async def _scrape_reads(ctx: ApiContext) -> StoreRead:
    """The gauges a scrape reads from the store."""
    return StoreRead(
        await ctx.store.queue(),
        await ctx.store.channel_health(),
        None if ctx.drills is None else await ctx.drills.latest(),
    )


async def _status(ctx: ApiContext, store: StoreHealth) -> dict[str, Any]:
    """The status document; while the store cannot be read, what this process knows without it
    (an operator asks most when the database is down: the provider's state is in memory)."""
    read = await _unless_down(store, lambda: _status_reads(ctx))
    if read is None:
        unread = _provider_in_memory(ctx)
        read = {"provider": views.provider(ctx.provider_name, unread), "queue": None, "channels": None}
        read |= {"last_drill": None, "nodes": None}
    return {
        "version": __version__,
        "store": views.store(store.failing),
        "explain": ctx.monitor.explain().as_dict(),
        **read,
    }


async def _unless_down(store: StoreHealth, read: Callable[[], Awaitable[T]]) -> T | None:
    """``read()``, or None if the store cannot answer it; a store known to fail is given
    READ_WHILE_FAILING_S (a pool waiting for PostgreSQL would hold the request), and a failure
    the verdict did not know yet is told to it."""
    failing = await store.verdict()
    try:
        return await asyncio.wait_for(read(), None if failing is None else READ_WHILE_FAILING_S)
    except (StoreUnavailable, TimeoutError) as exc:
        if failing is None:
            store.heard(Proof.READ, exc)
        return None


async def _status_reads(ctx: ApiContext) -> dict[str, Any]:
    """What the status document reads from the store."""
    provider = await ctx.store.provider()
    queue = await ctx.store.queue()
    channels = await ctx.store.channel_health()
    return {
        "provider": views.provider(ctx.provider_name, provider),
        "queue": views.queue(queue, ctx.in_flight()),
        "channels": [views.channel(c) for c in channels],
        "last_drill": await _last_drill(ctx),
        "nodes": await _nodes(ctx),
    }


def _sign_in() -> JSONResponse:
    return error_response(
        401,
        "unauthorized",
        "sign in with an API token",
        headers={"WWW-Authenticate": 'Basic realm="backchannel"'},
    )


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


def _unread_page(ctx: ApiContext) -> statuspage.PageData:
    """The page while the store cannot be read: the provider as this process holds it."""
    return statuspage.PageData(
        provider_name=ctx.provider_name,
        provider=_provider_in_memory(ctx),
        events=(),
        checks=(),
        queue=QueueView(),
        channels=(),
        drill=None,
        recent=(),
        now=ctx.clock.now(),
        unread=True,
    )


def _provider_in_memory(ctx: ApiContext) -> ProviderView:
    """The provider's state, mode and counts as this process holds them (no history)."""
    monitor = ctx.monitor
    return ProviderView(monitor.state, monitor.mode, monitor.tracker.snapshot)


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
