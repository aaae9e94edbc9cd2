"""A Twilio stand-in on 127.0.0.1: the Messages API create call, and signed status callbacks.

Errors come in Twilio's documented shape (https://www.twilio.com/docs/usage/twilios-response):
a JSON body with a numeric ``code``, ``message``, ``more_info`` and ``status``. A sender is
rate-limited per segment like Twilio's queue would be if it were not one: a token bucket of
``rate_per_s`` segments per second per sender (``burst`` absorbs loopback jitter), answering
429 with code 20429 and ``Retry-After`` above it.

Tests script replies with :meth:`TwilioStandIn.fail_next` (consumed in order) or
:meth:`TwilioStandIn.fail_number` (every message to that number), and make "Twilio" post a
status callback with :meth:`TwilioStandIn.post_status`, signed with the account's auth token
by twilio's own :class:`RequestValidator` (or with another token, to forge one).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from channels.gsm import segment_count

MESSAGES_PATH = "/2010-04-01/Accounts/{account_sid}/Messages.json"


@dataclass(frozen=True)
class Reply:
    """A scripted error answer."""

    status: int
    code: int | None = None
    message: str = "scripted error"
    retry_after: str | None = None


@dataclass(frozen=True)
class Sent:
    """One message the stand-in accepted."""

    sid: str
    to: str
    sender: str
    body: str
    params: dict[str, str]
    at: float


@dataclass
class _Limiter:
    rate_per_s: float
    burst: float
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, key: str, cost: float, now: float) -> bool:
        tokens, at = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate_per_s)
        # A message longer than the burst is let through on a full bucket and overdraws it.
        allowed = tokens >= min(cost, self.burst)
        self.buckets[key] = (tokens - cost if allowed else tokens, now)
        return allowed


class TwilioStandIn:
    """Records accepted messages; answers scripted errors, bad credentials and rate limits."""

    def __init__(
        self, account_sid: str, auth_token: str, *, rate_per_s: float = 1000.0, burst: float = 2.0
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.sent: list[Sent] = []
        self.requests = 0
        self.rate_limited = 0
        self.port = 0
        self._script: deque[Reply] = deque()
        self._by_number: dict[str, Reply] = {}
        self._limiter = _Limiter(rate_per_s, burst)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, *replies: Reply) -> None:
        self._script.extend(replies)

    def fail_number(self, number: str, reply: Reply) -> None:
        self._by_number[number] = reply

    def app(self) -> Starlette:
        return Starlette(routes=[Route(MESSAGES_PATH, self._create_message, methods=["POST"])])

    async def post_status(
        self, sent: Sent, status: str, *, auth_token: str | None = None, **extra: str
    ) -> int:
        """POST a status callback for ``sent`` to its StatusCallback URL; the receiver's HTTP status."""
        url = sent.params["StatusCallback"]
        form = {
            "AccountSid": self.account_sid,
            "MessageSid": sent.sid,
            "SmsSid": sent.sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "To": sent.to,
            "From": sent.sender,
            "ApiVersion": "2010-04-01",
            **extra,
        }
        signature = RequestValidator(auth_token or self.auth_token).compute_signature(url, form)
        async with httpx.AsyncClient(timeout=10.0) as client:
            response = await client.post(url, data=form, headers={"X-Twilio-Signature": signature})
        return response.status_code

    async def _create_message(self, request: Request) -> Response:
        self.requests += 1
        if not self._authorised(request):
            return _error(401, 20003, "Authenticate")
        form = await read_form(request)
        to, body = form.get("To", ""), form.get("Body", "")
        sender = form.get("From") or form.get("MessagingServiceSid", "")
        if invalid := _missing(to, sender, body):
            return invalid
        if scripted := (self._script.popleft() if self._script else self._by_number.get(to)):
            return _error(scripted.status, scripted.code, scripted.message, scripted.retry_after)
        if not self._limiter.allow(sender, segment_count(body), time.monotonic()):
            self.rate_limited += 1
            return _error(429, 20429, "Too Many Requests", "1")
        sid = "SM" + secrets.token_hex(16)
        self.sent.append(Sent(sid, to, sender, body, form, time.monotonic()))
        return JSONResponse(_resource(sid, self.account_sid, to, sender, body), 201)

    def _authorised(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        path_sid = request.path_params["account_sid"]
        return request.headers.get("authorization") == f"Basic {expected}" and path_sid == self.account_sid


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded form body (without python-multipart, which Starlette's ``form()`` needs)."""
    return dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))


def _missing(to: str, sender: str, body: str) -> Response | None:
    if not to:
        return _error(400, 21604, "A 'To' phone number is required.")
    if not sender:
        return _error(400, 21603, "A 'From' phone number is required.")
    if not body:
        return _error(400, 21602, "Message body is required.")
    return None


def _error(status: int, code: int | None, message: str, retry_after: str | None = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if code is not None:
        body["more_info"] = f"https://www.twilio.com/docs/errors/{code}"
    headers = {"Retry-After": retry_after} if retry_after else {}
    return JSONResponse(body, status, headers)


def _resource(sid: str, account_sid: str, to: str, sender: str, body: str) -> dict[str, Any]:
    return {
        "sid": sid,
        "account_sid": account_sid,
        "to": to,
        "from": sender,
        "body": body,
        "status": "queued",
        "num_segments": str(segment_count(body)),
        "direction": "outbound-api",
        "api_version": "2010-04-01",
        "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
    }


@contextlib.asynccontextmanager
async def serve_app(app: Starlette) -> AsyncIterator[int]:
    """Run ``app`` on 127.0.0.1 (an ephemeral port) in this event loop; yields the port."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", access_log=False, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10.0
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError("the stand-in server did not start")
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def serve(stand_in: TwilioStandIn) -> AsyncIterator[TwilioStandIn]:
    """Run ``stand_in`` for the block's duration; its ``base_url`` is set inside."""
    async with serve_app(stand_in.app()) as port:
        stand_in.port = port
        yield stand_in
