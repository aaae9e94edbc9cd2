"""Consistent JSON error bodies: ``{"error": code, "message": text, "details": [...]}``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return invalid(exc.errors())


def invalid(errors: Sequence[Any], prefix: tuple[str, ...] = ()) -> JSONResponse:
    """422 naming each bad field and why."""
    details = [
        {"field": ".".join(str(p) for p in (*prefix, *error["loc"])), "reason": error["msg"]}
        for error in errors
    ]
    summary = "; ".join(f"{d['field']}: {d['reason']}" for d in details[:5])
    return error_response(422, "invalid_request", summary or "invalid request", details)


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    codes = {
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        413: "too_large",
        422: "invalid_request",
        429: "rate_limited",
    }
    return error_response(
        exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail), headers=dict(exc.headers or {})
    )


async def not_leader(_: Request, exc: Exception) -> JSONResponse:
    """This node does not decide the provider's state (HA follower, or a leader just deposed)."""
    return error_response(
        409, "not_leader", f"{exc}; send it to the leader (GET /v1/status names it under explain)"
    )
