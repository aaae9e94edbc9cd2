"""The provider override over HTTP: force the provider's state, release it back to the checks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from daemon.api.auth import BearerAuth
from daemon.api.errors import BEARER, token_errors
from daemon.api.models import OverrideIn
from daemon.api.status_models import OverrideOut
from daemon.core.model import ProviderState
from daemon.monitor import ProviderMonitor

_NOT_LEADER = "This node does not lead: send it to the leader (error not_leader)"


def override_router(monitor: ProviderMonitor, auth: BearerAuth) -> APIRouter:
    router = APIRouter()
    admin = Depends(auth.require("admin"))

    @router.post(
        "/v1/provider/override",
        tags=["operations"],
        dependencies=[admin],
        response_model=OverrideOut,
        responses=token_errors("admin", {409: _NOT_LEADER, 413: "Body too large", 422: "Invalid body"}),
        openapi_extra=BEARER,
    )
    async def override(body: OverrideIn) -> dict[str, Any]:
        """Force the provider's state (e.g. declare an outage the checks have not seen)."""
        await monitor.force(ProviderState(body.state), body.reason)
        return {"state": monitor.state.value, "forced": body.state}

    @router.delete(
        "/v1/provider/override",
        tags=["operations"],
        dependencies=[admin],
        response_model=OverrideOut,
        responses=token_errors("admin", {409: _NOT_LEADER}),
        openapi_extra=BEARER,
    )
    async def release() -> dict[str, Any]:
        """Release an override; the state returns to what the checks say."""
        await monitor.release()
        return {"state": monitor.state.value, "forced": None}

    return router
