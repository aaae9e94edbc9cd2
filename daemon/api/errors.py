"""Consistent JSON error bodies: ``{"error": code, "message": text, "details": [...]}``.

And their description in ``/openapi.json``: :func:`error_responses` for the errors an operation
answers, :func:`token_errors` for the refusals of an operation that needs a token, :data:`BEARER`
and :data:`BEARER_OR_BASIC` for its ``security``. The FastAPI routes and the lean intake endpoint
(:mod:`daemon.api.submit`) describe their errors with these, so the document says what they answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from daemon.store.base import Unreadable

#: how long a client is asked to wait after a 503 (whole seconds)
RETRY_AFTER_S = "5"


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
        400: "invalid_request",
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


async def store_unavailable(_: Request, exc: Exception) -> JSONResponse:
    """The store cannot answer now (disk, database): try again shortly."""
    return error_response(503, "store_unavailable", str(exc), headers={"Retry-After": RETRY_AFTER_S})


INTERNAL_ERROR = "internal error; the daemon's log has the details"


async def internal_error(_: Request, exc: Exception) -> JSONResponse:
    """A bug: the same JSON body as every other error (the traceback goes to the log)."""
    return error_response(500, "internal_error", INTERNAL_ERROR)


async def unreadable(_: Request, exc: Exception) -> JSONResponse:
    """A notification stored by another release (or edited by hand) that this one cannot decode."""
    assert isinstance(exc, Unreadable)
    cancel = f"POST /v1/notifications/{exc.notification_id}/cancel"
    return error_response(500, "unreadable", f"{exc}; read it with the release that wrote it, or {cancel}")


async def not_leader(_: Request, exc: Exception) -> JSONResponse:
    """This node does not decide the provider's state (HA follower, or a leader just deposed)."""
    return error_response(
        409, "not_leader", f"{exc}; send it to the leader (GET /v1/status names it under explain)"
    )


# --- OpenAPI ------------------------------------------------------------------------------------

#: ``openapi_extra`` of an operation that takes a bearer token
BEARER: dict[str, Any] = {"security": [{"bearer": []}]}
#: ``openapi_extra`` of an operation that takes a bearer token or HTTP Basic (the token as password)
BEARER_OR_BASIC: dict[str, Any] = {"security": [{"bearer": []}, {"basic": []}]}
ERROR_CONTENT: dict[str, Any] = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "whole seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 1},
    }
}


#: the 503 of every operation that reads or writes the store
STORE_UNAVAILABLE = (
    "The store cannot be read or commit now (`store_unavailable`, Retry-After); nothing was changed"
)


def error_responses(described: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for ``{status: when}``: the Error body, and Retry-After on 429 and 503."""
    return {str(status): _error_response(status, when) for status, when in described.items()}


def token_errors(scope: str, described: Mapping[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """The :func:`error_responses` of an operation needing ``scope``: 401, 403, 429, 503 (the
    store, which every such operation reads or writes, cannot answer now) and ``described``."""
    return error_responses(
        {
            401: "Missing or invalid token (WWW-Authenticate)",
            403: f"The token lacks the {scope} scope",
            429: "The token is over its rate limit (Retry-After)",
            503: STORE_UNAVAILABLE,
            **(described or {}),
        }
    )


def _error_response(status: int, when: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": when, "content": ERROR_CONTENT}
    if status in (429, 503):
        response["headers"] = _RETRY_AFTER
    return response
