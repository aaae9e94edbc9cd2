"""Bearer tokens, compared in constant time against every configured token."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping

from fastapi import HTTPException, Request


class Unauthorized(Exception):
    """Missing or invalid bearer token."""


class BearerAuth:
    def __init__(self, tokens: Callable[[], Mapping[str, str]]) -> None:
        self._tokens = tokens

    def check(self, authorization: str) -> str:
        """The name of the token presented in an ``Authorization`` header, or Unauthorized."""
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise Unauthorized("missing bearer token")
        match = None
        for name, token in self._tokens().items():
            # No early exit: every token is compared, so timing says nothing about which matched.
            if hmac.compare_digest(presented.encode(), token.encode()):
                match = name
        if match is None:
            raise Unauthorized("invalid bearer token")
        return match

    async def dependency(self, request: Request) -> str:
        """As a FastAPI dependency: async, so it runs on the loop rather than in a worker thread."""
        try:
            return self.check(request.headers.get("authorization", ""))
        except Unauthorized as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
