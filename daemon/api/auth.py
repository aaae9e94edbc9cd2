"""Bearer tokens, compared in constant time against every configured token."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping

from fastapi import HTTPException, Request


def bearer_auth(tokens: Callable[[], Mapping[str, str]]) -> Callable[[Request], Awaitable[str]]:
    """A dependency that returns the caller's token name or answers 401."""

    # async so FastAPI runs it on the loop, not in a worker thread (a thread hop per request)
    async def authenticate(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        match = None
        for name, token in tokens().items():
            # No early exit: every token is compared, so timing says nothing about which matched.
            if hmac.compare_digest(presented.encode(), token.encode()):
                match = name
        if match is None:
            raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
        return match

    return authenticate
