"""A Slack stand-in on 127.0.0.1: the Web API methods backchannel calls, plus incoming webhooks.

It answers the way Slack documents (https://api.slack.com/web#responses): HTTP 200 with
``ok: false`` for API errors, HTTP 429 with ``Retry-After`` when a channel is posted to faster
than its limit. The limit is a token bucket per channel (``rate_per_s``, ``burst``): Slack
allows "short bursts" over one message per second per channel
(https://api.slack.com/methods/chat.postMessage#rate_limiting), so a small ``burst`` keeps a
sender that paces correctly from being punished for loopback jitter.

Tests script replies with :meth:`SlackStandIn.fail_next` (consumed in order, one per request).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


@dataclass(frozen=True)
class Reply:
    """A scripted reply: an ``ok: false`` error, or a bare HTTP status (429, 500...)."""

    error: str | None = None
    status: int = 200
    retry_after: str | None = None
    body: str = ""


@dataclass(frozen=True)
class Post:
    """One message the stand-in accepted."""

    channel: str
    payload: dict[str, Any]
    ts: str
    #: time.monotonic() when it was accepted
    at: float = 0.0


@dataclass
class _Limiter:
    rate_per_s: float
    burst: float
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def allow(self, key: str, now: float) -> bool:
        tokens, at = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate_per_s)
        allowed = tokens >= 1.0
        self.buckets[key] = (tokens - 1.0 if allowed else tokens, now)
        return allowed


class SlackStandIn:
    """Records posts, lookups and webhook calls; answers scripted errors and rate limits."""

    def __init__(self, token: str, *, rate_per_s: float = 100.0, burst: float = 2.0) -> None:
        self.token = token
        self.users: dict[str, str] = {}
        self.channels: dict[str, str] = {"#ops": "C0OPS"}
        self.posts: list[Post] = []
        #: chat.update calls that changed a posted message, in order; every chat.update request
        self.updates: list[Post] = []
        self.update_requests = 0
        #: while set, chat.postMessage requests wait for it (``holding`` counts them) before posting
        self.gate: asyncio.Event | None = None
        self.holding = 0
        self.webhook_posts: list[dict[str, Any]] = []
        self.lookups: list[str] = []
        self.rate_limited = 0
        self.port = 0
        self._script: deque[Reply] = deque()
        self._channel_script: dict[str, deque[Reply]] = {}
        self._limiter = _Limiter(rate_per_s, burst)
        self._seq = 0

    def fail_next(self, *replies: Reply, channel: str | None = None) -> None:
        """Answer the next requests (or the next posts to ``channel``) with ``replies``."""
        script = self._script if channel is None else self._channel_script.setdefault(channel, deque())
        script.extend(replies)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def webhook_url(self, secret: str) -> str:
        return f"http://127.0.0.1:{self.port}/services/T000/B000/{secret}"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/chat.postMessage", self._post_message, methods=["POST"]),
                Route("/api/chat.update", self._update, methods=["POST"]),
                Route("/api/users.lookupByEmail", self._lookup_by_email, methods=["POST"]),
                Route("/services/{team}/{bot}/{secret}", self._webhook, methods=["POST"]),
            ]
        )

    async def _post_message(self, request: Request) -> Response:
        args, denied = await self._authorised(request)
        if denied is not None:
            return denied
        channel = str(args.get("channel", ""))
        if not channel:
            return _error("channel_not_found")
        channel_id = self.channels.get(channel, channel)
        if channel_id.startswith("#"):
            return _error("channel_not_found")
        if channel_id.startswith("U"):
            channel_id = "D" + channel_id[1:]
        scripted = self._channel_script.get(channel_id)
        if scripted:
            return _scripted_response(scripted.popleft())
        if self.gate is not None:
            self.holding += 1
            await self.gate.wait()
            self.holding -= 1
        if not self._limiter.allow(channel_id, time.monotonic()):
            self.rate_limited += 1
            return JSONResponse({"ok": False, "error": "ratelimited"}, 429, {"Retry-After": "1"})
        self._seq += 1
        ts = f"{int(time.time())}.{self._seq:06d}"
        self.posts.append(Post(channel_id, args, ts, time.monotonic()))
        return JSONResponse({"ok": True, "channel": channel_id, "ts": ts, "message": {"ts": ts}})

    async def _update(self, request: Request) -> Response:
        """chat.update of a message this stand-in posted: ``message_not_found`` for any other."""
        self.update_requests += 1
        args, denied = await self._authorised(request)
        if denied is not None:
            return denied
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        if not any(p.channel == channel and p.ts == ts for p in self.posts):
            return _error("message_not_found")
        self.updates.append(Post(channel, args, ts, time.monotonic()))
        text = str(args.get("text", ""))
        answer = {"ok": True, "channel": channel, "ts": ts, "text": text, "message": {"text": text}}
        return JSONResponse(answer)

    async def _lookup_by_email(self, request: Request) -> Response:
        args, denied = await self._authorised(request)
        if denied is not None:
            return denied
        email = str(args.get("email", ""))
        self.lookups.append(email)
        if email not in self.users:
            return _error("users_not_found")
        return JSONResponse({"ok": True, "user": {"id": self.users[email], "profile": {"email": email}}})

    async def _webhook(self, request: Request) -> Response:
        scripted = self._scripted()
        if scripted is not None:
            headers = {"Retry-After": scripted.retry_after} if scripted.retry_after else {}
            return PlainTextResponse(scripted.body or scripted.error or "", scripted.status, headers)
        payload = json.loads(await request.body())
        if not (payload.get("text") or payload.get("blocks")):
            return PlainTextResponse("invalid_payload", 400)
        self.webhook_posts.append(payload)
        return PlainTextResponse("ok")

    async def _authorised(self, request: Request) -> tuple[dict[str, Any], Response | None]:
        args = await _arguments(request)
        scripted = self._scripted()
        if scripted is not None:
            return args, _scripted_response(scripted)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return args, _error("invalid_auth")
        return args, None

    def _scripted(self) -> Reply | None:
        return self._script.popleft() if self._script else None


async def _arguments(request: Request) -> dict[str, Any]:
    raw = (await request.body()).decode()
    if request.headers.get("content-type", "").startswith("application/json"):
        parsed: dict[str, Any] = json.loads(raw) if raw else {}
        return parsed
    return dict(parse_qsl(raw))


def _error(code: str) -> Response:
    return JSONResponse({"ok": False, "error": code})


def _scripted_response(reply: Reply) -> Response:
    headers = {"Retry-After": reply.retry_after} if reply.retry_after else {}
    if reply.error is not None:
        return JSONResponse({"ok": False, "error": reply.error}, reply.status, headers)
    return PlainTextResponse(reply.body, reply.status, headers)


@contextlib.asynccontextmanager
async def serve(stand_in: SlackStandIn) -> AsyncIterator[SlackStandIn]:
    """Run ``stand_in`` on 127.0.0.1 (an ephemeral port) in this event loop for the block's duration."""
    config = uvicorn.Config(
        stand_in.app(), host="127.0.0.1", port=0, lifespan="off", access_log=False, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10.0
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError("the Slack stand-in did not start")
        await asyncio.sleep(0.01)
    stand_in.port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield stand_in
    finally:
        server.should_exit = True
        await task
