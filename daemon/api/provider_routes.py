"""The provider override over HTTP: force the provider's state, release it back to the checks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from daemon.api.auth import BearerAuth
from daemon.api.models import OverrideIn
from daemon.core.model import ProviderState
from daemon.monitor import ProviderMonitor


def override_router(monitor: ProviderMonitor, auth: BearerAuth) -> APIRouter:
    router = APIRouter()
    admin = Depends(auth.require("admin"))

    @router.post("/v1/provider/override", tags=["operations"], dependencies=[admin])
    async def override(body: OverrideIn) -> dict[str, Any]:
        """Force the provider's state (e.g. declare an outage the checks have not seen)."""
        await monitor.force(ProviderState(body.state), body.reason)
        return {"state": monitor.state.value, "forced": body.state}

    @router.delete("/v1/provider/override", tags=["operations"], dependencies=[admin])
    async def release() -> dict[str, Any]:
        """Release an override; the state returns to what the checks say."""
        await monitor.release()
        return {"state": monitor.state.value, "forced": None}

    return router
