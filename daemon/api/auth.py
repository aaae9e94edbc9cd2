"""Bearer tokens, compared in constant time against every configured token."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Mapping

from fastapi import HTTPException, Request


class Unauthorized(Exception):
    """Missing or invalid bearer token."""


class BearerAuth:
    def __init__(self, tokens: Callable[[], Mapping[str, str]]) -> None:
        self._tokens = tokens

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


def _basic_password(credentials: str) -> str:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]
