"""Failover drills over HTTP: start one, read its results."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from daemon.api.auth import BearerAuth
from daemon.api.errors import BEARER, token_errors
from daemon.api.status_models import DrillOut, DrillStarted
from daemon.drills import DrillError, Drills, summary


class DrillIn(BaseModel):
    """Which routes' backup channels to drill; all routes when omitted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: Annotated[list[str], Field(min_length=1)] | None = None


def drill_router(drills: Drills, auth: BearerAuth) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.post(
        "/v1/drills",
        status_code=202,
        dependencies=[Depends(auth.require("admin"))],
        response_model=DrillStarted,
        responses=token_errors(
            "admin", {413: "Body too large", 422: "Invalid body, an unknown route, or nothing to drill"}
        ),
        openapi_extra=BEARER,
    )
    async def start(body: DrillIn | None = None) -> dict[str, Any]:
        """Send a labelled test message through every backup channel of the chosen routes."""
        try:
            drill_id, notifications = await drills.start(body.routes if body else None)
        except DrillError as exc:
            raise HTTPException(422, str(exc)) from exc
        return {"drill": drill_id, "notifications": notifications}

    @router.get(
        "/v1/drills/{drill_id}",
        dependencies=[Depends(auth.require("read"))],
        response_model=DrillOut,
        responses=token_errors("read", {404: "No such drill", 422: "Invalid request"}),
        openapi_extra=BEARER,
    )
    async def result(drill_id: str) -> dict[str, Any]:
        """Per channel: pending, delivered or failed (with the reason), and vendor confirmation."""
        results = await drills.results(drill_id)
        if not results:
            raise HTTPException(404, f"no drill {drill_id}")
        return summary(drill_id, results)

    return router
