"""``POST /v1/intake/alertmanager`` and ``POST /v1/intake/grafana``: alert webhooks in, notifications out.

Authentication is what the senders can be configured to send: a bearer token (Alertmanager's
``http_config.authorization``, Grafana's "Authorization header") or HTTP Basic (Alertmanager's
``http_config.basic_auth``, Grafana's basic auth) with the token's *name* as the username and the
token as the password, checked in constant time against every configured token.

Answers: 202 ``{"ids": [...], "duplicates": [...]}`` only after the notifications are committed
(Alertmanager retries a 5xx answer, so a 503 while the store cannot commit makes it try again
later; it does not retry a 4xx); 401, 403, 422 with the bad fields, 503 + Retry-After (the store,
draining, or the token over its rate limit: ``rate_limited`` is a 503 here, not a 429, for that
reason). The credentials are checked from the headers, once, before any of the body is read
(:meth:`WebhookIntake.screen`): a refused call is answered at once (no ``100 Continue``), with
``Connection: close`` when a body was to follow.

Two ways in, one behaviour (:class:`WebhookIntake`): :class:`WebhookEndpoint`, a bare ASGI app
for the hot path (FastAPI's request machinery cost about 0.4 ms of CPU per call, a third of the
intake's cost, as for ``POST /v1/notifications`` in :mod:`daemon.api.submit`), and
:func:`webhook_router`, the same operations as FastAPI routes, which describe them in
``/openapi.json`` and serve them if the endpoint is not mounted in front.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.types import Receive, Scope, Send

from daemon.api.auth import BearerAuth, Forbidden, RateLimited, Unauthorized, refusal
from daemon.api.errors import BEARER_OR_BASIC, RETRY_AFTER_S, token_errors
from daemon.api.limits import Widen
from daemon.api.submit import Reply, closing, error, invalid_reply, read_body, send_reply
from daemon.intake.accept import Acceptor, Submission
from daemon.intake.alertmanager import AlertmanagerPayload, submissions
from daemon.intake.grafana import GrafanaPayload, grafana_submissions
from daemon.intake.webhook_config import WebhookSettings
from daemon.store.base import StoreUnavailable

ALERTMANAGER_PATH = "/v1/intake/alertmanager"
#: a call larger than this is validated and mapped on a thread, not on the event loop
ON_THE_LOOP_BYTES = 256 * 1024
GRAFANA_PATH = "/v1/intake/grafana"
CHALLENGE = 'Bearer realm="backchannel", Basic realm="backchannel"'
#: merge into the OpenAPI document's ``components.securitySchemes`` (the bearer one exists already)
SECURITY_SCHEMES: dict[str, Any] = {"basic": {"type": "http", "scheme": "basic"}}

#: how a call admitted from its headers is answered once its body is in
Call = Callable[[bytes], Awaitable[Reply]]


class WebhookAuth:
    """Bearer as :class:`BearerAuth`, or Basic with username = token name and password = token."""

    def __init__(self, bearer: BearerAuth) -> None:
        self._bearer = bearer

    def check(self, authorization: str) -> str:
        """The name of the token presented, or Unauthorized."""
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "basic":
            return self._bearer.check(authorization, basic=True)  # its answer names both schemes
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthorized("malformed basic credentials") from exc
        username, _, password = decoded.partition(":")
        match = None
        for name, token in self._bearer.tokens.items():
            # Both halves compared for every token, no early exit: timing tells nothing.
            same_name = hmac.compare_digest(username.encode(), name.encode())
            if hmac.compare_digest(password.encode(), token.encode()) & same_name:
                match = name
        if match is None:
            raise Unauthorized(
                "invalid basic credentials: the username is the token's name in api.tokens, "
                "the password the token"
            )
        return match


class WebhookIntake:
    """Validates, maps and commits one webhook call; the endpoint and the router adapt it to HTTP.

    ``settings`` is called per request, so a configuration reload applies at once.
    """

    def __init__(
        self,
        acceptor: Acceptor,
        gate: BearerAuth,
        draining: Callable[[], bool],
        settings: Callable[[], WebhookSettings],
    ) -> None:
        """``gate``: the tokens, scopes and rate limits, shared with the other endpoints (one bucket
        a token)."""
        self._acceptor = acceptor
        self._auth = WebhookAuth(gate)
        self._gate = gate
        self._draining = draining
        self._settings = settings
        self._calls: dict[str, Call] = {ALERTMANAGER_PATH: self._alertmanager, GRAFANA_PATH: self._grafana}

    def body_limit(self, default: int, alerts: int) -> Widen:
        """The body limits' :data:`~daemon.api.limits.Widen`: ``alerts`` (``api.max_alert_body_bytes``)
        on the alert webhooks for credentials that sign in, checked from the headers before the
        larger body is read (an anonymous client gets no more than ``default`` buffered)."""

        def limit(path: str, authorization: str) -> int:
            if path not in (ALERTMANAGER_PATH, GRAFANA_PATH):
                return default
            try:
                self._auth.check(authorization)
            except Unauthorized:
                return default
            return alerts

        return limit

    def screen(self, path: str, authorization: str) -> Reply | Call:
        """From the headers alone, before any of the body is read: the refusal (401, 403, 503
        ``rate_limited``), or what answers the admitted call on ``path`` once its body is in (the
        token has taken from its rate limit): the only way to a call, so none goes unchecked."""
        try:
            self._gate.admit(self._auth.check(authorization), "send")
        except (Unauthorized, Forbidden, RateLimited) as exc:
            status, code, headers = refusal(exc, CHALLENGE)
            if isinstance(exc, RateLimited):
                # Alertmanager drops a call answered 4xx until the group's next flush (minutes);
                # a 5xx it sends again, after Retry-After's worth of its own backoff.
                status = 503
            return error(status, code, str(exc), headers=headers)
        return self._calls[path]

    async def _alertmanager(self, raw: bytes) -> Reply:
        def mapping(body: bytes) -> list[Submission]:
            payload = AlertmanagerPayload.model_validate_json(body)
            return submissions(payload, self._settings().alertmanager)

        return await self._handle(raw, mapping)

    async def _grafana(self, raw: bytes) -> Reply:
        def mapping(body: bytes) -> list[Submission]:
            return grafana_submissions(GrafanaPayload.model_validate_json(body), self._settings().grafana)

        return await self._handle(raw, mapping)

    async def _handle(self, raw: bytes, mapping: Callable[[bytes], list[Submission]]) -> Reply:
        if self._draining():
            return error(503, "draining", "shutting down", headers={"Retry-After": RETRY_AFTER_S})
        try:
            # A fleet-wide group (megabytes, thousands of alerts) takes a second or more to read:
            # on a thread, the loop (dispatch, probes, the other intakes) gets its turns meanwhile.
            items = mapping(raw) if len(raw) <= ON_THE_LOOP_BYTES else await asyncio.to_thread(mapping, raw)
        except ValidationError as exc:
            return invalid_reply(exc)
        try:
            accepted = await self._acceptor.accept(items) if items else []
        except StoreUnavailable as exc:
            return error(503, "store_unavailable", str(exc), headers={"Retry-After": RETRY_AFTER_S})
        body = {"ids": [a.id for a in accepted], "duplicates": [a.id for a in accepted if a.duplicate]}
        return 202, body, {}


class WebhookAccepted(BaseModel):
    """The notifications made from the call, in order; ``duplicates`` were already known (re-sends)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ids: list[str]
    duplicates: list[str]


class WebhookEndpoint:
    """Both webhook paths as a bare ASGI app; put it in front of FastAPI for ``handles(scope)``."""

    def __init__(self, intake: WebhookIntake) -> None:
        self._intake = intake

    def handles(self, scope: Scope) -> bool:
        return (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in (ALERTMANAGER_PATH, GRAFANA_PATH)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
        call = self._intake.screen(scope["path"], authorization)
        if isinstance(call, tuple):  # refused, the body unread: uvicorn sends no 100 Continue
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            reply = closing(call, headers)
        else:
            reply = await call(await read_body(receive))
        # written straight to the server as in daemon.api.submit: no Starlette response per call
        await send_reply(send, reply, ensure_ascii=False)


def webhook_router(intake: WebhookIntake) -> APIRouter:
    """The two webhook operations as FastAPI routes: documented, and served if nothing is in front."""
    router = APIRouter(tags=["intake"])

    @router.post(
        ALERTMANAGER_PATH, status_code=202, responses=_responses(), openapi_extra=_body(AlertmanagerPayload)
    )
    async def alertmanager(request: Request) -> JSONResponse:
        """Prometheus Alertmanager's webhook receiver (payload version 4)."""
        return await _answer(intake, request)

    @router.post(GRAFANA_PATH, status_code=202, responses=_responses(), openapi_extra=_body(GrafanaPayload))
    async def grafana(request: Request) -> JSONResponse:
        """Grafana unified alerting's webhook contact point."""
        return await _answer(intake, request)

    return router


async def _answer(intake: WebhookIntake, request: Request) -> JSONResponse:
    call = intake.screen(request.scope["path"], request.headers.get("authorization", ""))
    if isinstance(call, tuple):
        return _response(closing(call, request.headers))
    return _response(await call(await request.body()))


def _response(reply: Reply) -> JSONResponse:
    status, body, headers = reply
    return JSONResponse(body, status_code=status, headers=headers or None)


# --- OpenAPI ------------------------------------------------------------------------------------


def _responses() -> dict[int | str, dict[str, Any]]:
    """A rate limit answers 503 here (see :class:`WebhookIntake`): no 429."""
    refusals = token_errors(
        "send",
        {
            401: "Missing or invalid bearer/basic credentials",
            413: "Body too large (`api.max_alert_body_bytes`)",
            422: "Not a valid payload; `details` names each bad field",
            503: "Draining, the store could not commit, or the token is over its rate limit (`rate_limited`)",
        },
    )
    refusals.pop("429")
    return {202: {"model": WebhookAccepted, "description": "Committed (or already known)"}, **refusals}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    schema = _inline(model.model_json_schema(by_alias=True))
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        **BEARER_OR_BASIC,
    }


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """Resolve ``#/$defs/...`` references in place: inside an OpenAPI document ``#`` is the document."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
