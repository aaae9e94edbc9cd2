"""``POST /v1/notifications``, the intake hot path, as a small ASGI endpoint.

FastAPI's request machinery (dependency solving, its middleware stack) cost more CPU per request
than validating and committing the notification: served directly, with the body validated from
bytes by pydantic-core, intake roughly doubled its throughput on the 2-core reference machine.
The operation is still described in ``/openapi.json`` (see :func:`openapi_operation`).

Credentials are checked from the headers, once, before any of the body is read: a refused request
is answered at once (no ``100 Continue``) and, when a body was to follow, with ``Connection: close``
(:func:`~daemon.api.limits.declares_body`), so an anonymous client cannot make the daemon receive,
hold or parse a body.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from daemon.api.auth import BearerAuth, Forbidden, RateLimited, Unauthorized, refusal
from daemon.api.errors import BEARER, RETRY_AFTER_S, token_errors
from daemon.api.lean_messages import Respond
from daemon.api.limits import declares_body
from daemon.api.models import SUBMIT, SUBMIT_SCHEMA, NotificationIn, reserved_key
from daemon.intake.accept import Acceptor, Submission
from daemon.store.base import KeyReused, StoreUnavailable

PATH = "/v1/notifications"

Reply = tuple[int, dict[str, Any], dict[str, str]]


def error(
    status: int,
    code: str,
    message: str,
    *,
    details: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = details
    return status, body, headers or {}


class SubmitEndpoint:
    def __init__(self, acceptor: Acceptor, auth: BearerAuth, draining: Callable[[], bool]) -> None:
        self._acceptor = acceptor
        self._auth = auth
        self._draining = draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        # refused from its headers, the body left unread: a client that sent "Expect: 100-continue"
        # is not told to send it (up to max_body_bytes) only to hear 401 after
        refused = self._refused(headers) or self._drained()
        if refused is not None:
            await send_reply(send, closing(refused, headers))
        else:
            await send_reply(send, await self._accept(headers, await read_body(receive)))

    def screen(self, headers: dict[str, str]) -> Reply | Respond:
        """From the headers alone (the intake workers' server asks before it reads the body): the
        refusal (401, 403, 429), or what answers the admitted request once its body is in."""
        return self._refused(headers) or self._admitted

    async def _admitted(self, headers: dict[str, str], raw: bytes) -> Reply:
        return self._drained() or await self._accept(headers, raw)

    def _refused(self, headers: dict[str, str]) -> Reply | None:
        """The token's refusal; None once it is admitted (and has taken from its rate limit)."""
        try:
            self._auth.authorize(headers.get("authorization", ""), "send")
        except (Unauthorized, Forbidden, RateLimited) as exc:
            status, code, headers = refusal(exc, "Bearer")
            return error(status, code, str(exc), headers=headers)
        return None

    def _drained(self) -> Reply | None:
        if self._draining():
            return error(503, "draining", "shutting down", headers={"Retry-After": RETRY_AFTER_S})
        return None

    async def _accept(self, headers: dict[str, str], raw: bytes) -> Reply:
        try:
            body = SUBMIT.validate_json(raw)
        except ValidationError as exc:
            return invalid_reply(exc, raw)
        key = headers.get("idempotency-key")
        batch = isinstance(body, list)
        if key is not None and (batch or not 0 < len(key) <= 255):
            return error(422, "invalid_request", "Idempotency-Key: 1 to 255 characters, for one notification")
        if key is not None and (why := reserved_key(key)):
            return error(422, "invalid_request", f"Idempotency-Key: {why}")
        items = body if isinstance(body, list) else [body]
        try:
            accepted = await self._acceptor.accept([_submission(item, key) for item in items])
        except StoreUnavailable as exc:
            return error(503, "store_unavailable", str(exc), headers={"Retry-After": RETRY_AFTER_S})
        except KeyReused as exc:
            return reused_reply(exc, items, batch)
        if batch:
            return (
                202,
                {"ids": [a.id for a in accepted], "duplicates": [a.id for a in accepted if a.duplicate]},
                {},
            )
        (one,) = accepted
        return (
            202,
            {"id": one.id, "duplicate": one.duplicate},
            {"Idempotent-Replayed": "true"} if one.duplicate else {},
        )


def closing(reply: Reply, headers: Mapping[str, str]) -> Reply:
    """A reply given before the request's body was read, with ``Connection: close`` if one was to
    follow: the client may send it or not, and the server does not read it to find out (the API
    port's server lingers a moment, discarding, so a client still sending reads the answer)."""
    if not declares_body(headers):
        return reply
    status, body, extra = reply
    return status, body, {**extra, "Connection": "close"}


async def read_body(receive: Receive) -> bytes:
    """The whole request body of a plain ASGI endpoint (BodyLimit has capped its size)."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_reply(send: Send, reply: Reply, *, ensure_ascii: bool = True) -> None:
    """Write a reply as a JSON response (``ensure_ascii=False`` renders as Starlette's JSONResponse)."""
    status, body, extra = reply
    payload = json.dumps(body, ensure_ascii=ensure_ascii, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def invalid_reply(exc: ValidationError, raw: bytes = b"") -> Reply:
    """422 naming each bad field of the body by its place in the body (``body.subject``,
    ``body.3.severity``) and why. The body is one notification or an array of them: an object is
    told only what it lacks as one, an array only what it lacks as a batch (the validator tries
    both, and names each by its type)."""
    errors = exc.errors(include_url=False)
    shape = _SHAPES.get(raw.lstrip()[:1])
    if shape is not None and any(e["loc"][:1] == (shape,) for e in errors):
        errors = [{**e, "loc": e["loc"][1:]} for e in errors if e["loc"][:1] == (shape,)]
    details = [{"field": ".".join(str(p) for p in ("body", *e["loc"])), "reason": e["msg"]} for e in errors]
    summary = "; ".join(f"{d['field']}: {d['reason']}" for d in details[:5])
    return error(422, "invalid_request", summary, details=details)


#: the first byte of a body, and the name the validator gives the body's type in an error's place
_SHAPES = {b"{": "NotificationIn", b"[": "list[NotificationIn]"}


def reused_reply(exc: KeyReused, items: list[NotificationIn], batch: bool) -> Reply:
    """422: a key the client chose came back with another notification; nothing was accepted.

    As the IETF's Idempotency-Key draft has it: answering the first notification as this one's
    duplicate would drop this one unseen, so the client learns that its key was reused. Not the
    first notification's id: keys are looked up whoever sent them, and another token's id is not
    this client's to learn (its own first 202 named it)."""
    if batch:
        field = f"body.{exc.index}.idempotency_key"
    elif items[0].idempotency_key is not None:
        field = "body.idempotency_key"
    else:
        field = "header.Idempotency-Key"
    reason = "first used for another notification"
    return error(
        422,
        "idempotency_key_reused",
        f"{field}: {reason}; a new notification needs a new key (nothing was accepted)",
        details=[{"field": field, "reason": reason}],
    )


#: made once (``json.dumps`` with arguments builds an encoder per call)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


#: the digest's version: a later release that digests other fields names another, and a key
#: stored under one version is never refused for a request digested by another
DIGEST_VERSION = "v1"


def request_digest(item: NotificationIn) -> str:
    """What a client's idempotency key stands for: the notification asked for, as validated
    (defaults filled in, the labels' order ignored; the recipients' order counts), without the key."""
    fields = [item.severity.value, item.subject, item.body, item.source, item.recipients, item.labels]
    return f"{DIGEST_VERSION}:{hashlib.sha256(_CANONICAL.encode(fields).encode()).hexdigest()}"


def _submission(item: NotificationIn, header_key: str | None) -> Submission:
    key = item.idempotency_key or header_key
    return Submission(
        severity=item.severity,
        subject=item.subject,
        body=item.body,
        source=item.source,
        recipients=tuple(item.recipients),
        labels=item.labels,
        idempotency_key=key,
        digest=None if key is None else request_digest(item),
    )


def openapi_operation() -> dict[str, Any]:
    """The OpenAPI description of this endpoint, merged into FastAPI's document."""
    return {
        "post": {
            "tags": ["notifications"],
            "summary": "Submit notifications",
            "description": "Accept one notification, or up to 1,000 in one durable commit. Answers 202 only "
            "after the commit. A repeated idempotency key (field or `Idempotency-Key` header) returns the "
            "first notification's id with `duplicate: true` if the request is the same, and 422 "
            "`idempotency_key_reused` (nothing accepted) if it asks for another notification.",
            "operationId": "submit_notifications",
            **BEARER,
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                },
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": SUBMIT_SCHEMA}}},
            "responses": _openapi_responses(),
        }
    }


def _openapi_responses() -> dict[int | str, Any]:
    """202 with the ids, or one of :func:`handle`'s refusals with the Error body."""
    return {
        "202": {
            "description": "Accepted and committed",
            "headers": {
                "Idempotent-Replayed": {
                    "description": "`true`: a single notification whose key was seen before; nothing stored",
                    "schema": {"type": "string", "enum": ["true"]},
                }
            },
            "content": {"application/json": {"schema": {"oneOf": [_accepted_one(), _accepted_batch()]}}},
        },
        **token_errors(
            "send",
            {
                413: "Body too large",
                422: "Invalid notification, or an idempotency key reused for another one",
                503: "Draining, or the store could not commit (Retry-After)",
            },
        ),
    }


def _accepted_one() -> dict[str, Any]:
    """The 202 body for one notification."""
    return {
        "type": "object",
        "required": ["id", "duplicate"],
        "properties": {"id": {"type": "string"}, "duplicate": {"type": "boolean"}},
        "additionalProperties": False,
    }


def _accepted_batch() -> dict[str, Any]:
    """The 202 body for a batch (a JSON array of notifications)."""
    return {
        "type": "object",
        "required": ["ids", "duplicates"],
        "properties": {
            "ids": {"type": "array", "items": {"type": "string"}},
            "duplicates": {"type": "array", "items": {"type": "string"}},
        },
        "additionalProperties": False,
    }
