"""Request size limit as pure ASGI middleware: 413 before the body is read into memory.

A path may have a limit of its own (the alert webhooks: Alertmanager sends a group whole, however
many alerts it holds). A body without a Content-Length (chunked) is counted as it is read; once
past the limit the read fails, and whatever the route makes of that failure (FastAPI answers a
body it cannot read with a 400, a handler's own ``except Exception`` with a 500) is replaced by
the 413: the client is told what was wrong with its request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _TooLarge(Exception):
    pass


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, by_path: Mapping[str, int] | None = None) -> None:
        """``by_path``: paths whose limit is not ``max_bytes``."""
        self.app = app
        self.max_bytes = max_bytes
        self.by_path = dict(by_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.by_path.get(scope["path"], self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
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
                if seen > limit:
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
