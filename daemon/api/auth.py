"""Bearer tokens, compared in constant time against every configured token."""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from fastapi import HTTPException, Request

from daemon.api.ratelimit import Buckets

#: what a token may do: submit notifications; read status, trails and metrics; operate (override,
#: drills, cancel)
SCOPES = ("send", "read", "admin")


class Unauthorized(Exception):
    """Missing or invalid bearer token."""


class Forbidden(Exception):
    """The token lacks the scope this operation needs."""


class RateLimited(Exception):
    """The token is over its rate limit."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limit exceeded; retry in {retry_after_s:.1f}s")
        self.retry_after_s = retry_after_s


def refusal(exc: Unauthorized | Forbidden | RateLimited, challenge: str) -> tuple[int, str, dict[str, str]]:
    """The HTTP status, error code and headers that answer a refused request."""
    if isinstance(exc, Unauthorized):
        return 401, "unauthorized", {"WWW-Authenticate": challenge}
    if isinstance(exc, Forbidden):
        return 403, "forbidden", {}
    return 429, "rate_limited", {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}


@dataclass(frozen=True)
class Grant:
    scopes: frozenset[str] = frozenset(SCOPES)
    #: requests per second (token bucket), None for no limit
    per_second: float | None = None
    burst: int = 1


class BearerAuth:
    def __init__(
        self,
        tokens: Callable[[], Mapping[str, str]],
        grants: Callable[[], Mapping[str, Grant]] = dict,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        buckets: Buckets,
    ) -> None:
        """``buckets``: where the rate limits are counted (:mod:`daemon.api.ratelimit`): one gate
        per process, given to every endpoint, and the buckets the process shares."""
        self._tokens = tokens
        self._grants = grants
        self._monotonic = monotonic
        self._buckets = buckets

    @property
    def tokens(self) -> Mapping[str, str]:
        """The configured tokens by name, as of now (a reload replaces them)."""
        return self._tokens()

    def authorize(self, authorization: str, scope: str, *, basic: bool = False) -> str:
        """The token's name if it is valid, has ``scope`` and is within its rate limit."""
        return self.admit(self.check(authorization, basic=basic), scope)

    def admit(self, name: str, scope: str) -> str:
        """For an authenticated token: Forbidden without ``scope``, RateLimited over its limit."""
        grant = self._grants().get(name, Grant())
        if scope not in grant.scopes:
            raise Forbidden(f"token {name!r} lacks the {scope!r} scope")
        if grant.per_second is not None:
            wait_s = self._buckets.take(name, grant.per_second, grant.burst, self._monotonic())
            if wait_s > 0:
                raise RateLimited(wait_s)
        return name

    def require(self, scope: str, *, basic: bool = False) -> Callable[[Request], Awaitable[str]]:
        """A FastAPI dependency (async, so it runs on the loop) for operations needing ``scope``."""

        async def dependency(request: Request) -> str:
            try:
                return self.authorize(request.headers.get("authorization", ""), scope, basic=basic)
            except (Unauthorized, Forbidden, RateLimited) as exc:
                status, _, headers = refusal(exc, 'Basic realm="backchannel"' if basic else "Bearer")
                raise HTTPException(status, str(exc), headers=headers or None) from exc

        return dependency

    def check(self, authorization: str, *, basic: bool = False) -> str:
        """The name of the token presented in an ``Authorization`` header, or Unauthorized.

        With ``basic``, HTTP Basic is accepted too (any user name, the token as password): what a
        browser can send for the status page, and what Alertmanager's ``basic_auth`` sends.
        """
        scheme, _, presented = authorization.partition(" ")
        if basic and scheme.lower() == "basic":
            presented = _basic_password(presented)
        elif scheme.lower() != "bearer":
            presented = ""
        if not presented:
            raise Unauthorized("missing bearer token" + (" or basic credentials" if basic else ""))
        match = None
        for name, token in self._tokens().items():
            # No early exit: every token is compared, so timing says nothing about which matched.
            if hmac.compare_digest(presented.encode(), token.encode()):
                match = name
        if match is None:
            what = "basic credentials" if scheme.lower() == "basic" else "bearer token"
            raise Unauthorized(f"invalid {what}")
        return match

    async def dependency(self, request: Request) -> str:
        """As a FastAPI dependency: async, so it runs on the loop rather than in a worker thread."""
        try:
            return self.check(request.headers.get("authorization", ""))
        except Unauthorized as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc


def _basic_password(credentials: str) -> str:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]
