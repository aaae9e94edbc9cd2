"""Request size limit as pure ASGI middleware: 413 before the body is read into memory.

A request may earn a larger limit (:data:`Widen`: the alert webhooks, whose groups come whole
however many alerts they hold, for credentials that sign in), asked from its path and headers
only when its body would pass the default, before any of the larger body is read. A body without a
Content-Length (chunked) is counted as it is read; once
past the limit the read fails, and whatever the route makes of that failure (FastAPI answers a
body it cannot read with a 400, a handler's own ``except Exception`` with a 500) is replaced by
the 413: the client is told what was wrong with its request.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _TooLarge(Exception):
    pass


#: a request's limit from its path and ``Authorization`` header, when its body would pass the default
Widen = Callable[[str, str], int]


def fixed(limit: int) -> Widen:
    """No request earns more than ``limit``."""
    return lambda _path, _authorization: limit


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, widen: Widen | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.widen = widen or fixed(max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit, widened = self.max_bytes, False

        def past(size: int) -> bool:
            nonlocal limit, widened
            if size > limit and not widened:  # the request may earn more, asked once
                widened = True
                authorization = headers.get(b"authorization", b"").decode("latin-1")
                limit = max(limit, self.widen(scope["path"], authorization))
            return size > limit

        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and past(int(declared)):
            await self._reject(send, limit)
            return
        seen = 0
        #: the app began its answer; the body outgrew the limit before it had (its answer is the 413's)
        started = replaced = False

        async def counting_receive() -> Message:
            nonlocal seen, replaced
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if past(seen):
                    replaced = not started
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if replaced:  # the route caught the failed read and answers it: the 413 instead
                if not started:
                    started = True
                    await self._reject(send, limit)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send, limit)

    async def _reject(self, send: Send, limit: int) -> None:
        body = json.dumps({"error": "too_large", "message": f"request body exceeds {limit} bytes"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
