"""Request size limit as pure ASGI middleware: 413 before the body is read into memory.

A request may earn a larger limit (:data:`Widen`: the alert webhooks, whose groups come whole
however many alerts they hold, for credentials that sign in), asked from its path and headers
only when its body would pass the default, before any of the larger body is read. A body without
a Content-Length (chunked) is counted as it is read; once past the limit the read fails, and
whatever the route makes of that failure (FastAPI answers a body it cannot read with a 400, a
handler's own ``except Exception`` with a 500) is replaced by the 413: the client is told what
was wrong with its request. A 413 closes the connection (the rest of the body is never read).
With an :class:`~daemon.api.admission.Admission`, the body's bytes are also counted against the
listener's ``api.max_buffered_body_bytes`` until the body is complete; a chunk past it fails the
read the same way, answered 503 ``overloaded`` (``Retry-After``, and the connection closed).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daemon.api.admission import Admission


class BodyRefused(Exception):
    """The body cannot be read further: the answer is ``status`` with ``body``, not the route's.

    Raised from ``receive`` into the app, which lets it pass (it is the client's, not a bug).
    """

    def __init__(self, status: int, body: dict[str, str], headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


#: a request's limit from its path and ``Authorization`` header, when its body would pass the default
Widen = Callable[[str, str], int]


def fixed(limit: int) -> Widen:
    """No request earns more than ``limit``."""
    return lambda _path, _authorization: limit


def declares_body(headers: Mapping[str, str]) -> bool:
    """Whether a body follows these headers (names lower-cased): a Content-Length past 0, or chunked.

    A request answered before such a body is read is answered with ``Connection: close``: whether
    the client then sends the body (``Expect: 100-continue`` or not) cannot be known, and reading
    it to find the next request is what answering early spares."""
    declared = headers.get("content-length", "0")
    return "transfer-encoding" in headers or not declared.isdigit() or int(declared) > 0


class BodyLimit:
    def __init__(
        self, app: ASGIApp, max_bytes: int, widen: Widen | None = None, admission: Admission | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.widen = widen or fixed(max_bytes)
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reading = _Reading(self, scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and reading.past(int(declared)):
            await _reject(send, reading.too_large())
            return
        try:
            await self.app(scope, reading.receive, reading.send)
        except BodyRefused as exc:
            if not reading.started:
                await _reject(send, exc)
        finally:
            reading.release()


class _Reading:
    """One request's body as the app reads it: its size against the limit, its bytes held in the
    listener's budget, and the refusal that replaces the app's answer."""

    def __init__(self, limits: BodyLimit, scope: Scope, receive: Receive, send: Send) -> None:
        self._limits = limits
        self._path: str = scope["path"]
        self._headers = dict(scope["headers"])
        self._receive, self._send = receive, send
        self.limit, self._widened = limits.max_bytes, False
        self._seen = self._held = 0
        #: the app began its answer; a refusal made before it had is the answer instead
        self.started = False
        self._refusal: BodyRefused | None = None

    def past(self, size: int) -> bool:
        if size > self.limit and not self._widened:  # the request may earn more, asked once
            self._widened = True
            authorization = self._headers.get(b"authorization", b"").decode("latin-1")
            self.limit = max(self.limit, self._limits.widen(self._path, authorization))
        return size > self.limit

    def too_large(self) -> BodyRefused:
        """The 413, with the connection closed after it: the rest of the body is not read, and
        finding the next request behind it would mean reading it all (as the workers' port)."""
        message = f"request body exceeds {self.limit} bytes"
        return BodyRefused(413, {"error": "too_large", "message": message}, {"Connection": "close"})

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            chunk = len(message.get("body", b""))
            self._seen += chunk
            if self.past(self._seen):
                raise self._refuse(self.too_large())
            if not message.get("more_body", False):
                self.release()  # complete: no longer a body still arriving
            elif not self._hold(chunk):
                raise self._refuse(self._overloaded())
        return message

    async def send(self, message: Message) -> None:
        if self._refusal is not None:  # the route caught the failed read and answers it: the refusal
            if not self.started:
                self.started = True
                await _reject(self._send, self._refusal)
            return
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)

    def _refuse(self, refusal: BodyRefused) -> BodyRefused:
        if self._refusal is None and not self.started:
            self._refusal = refusal
        return refusal

    def _hold(self, chunk: int) -> bool:
        admission = self._limits.admission
        if admission is None:
            return True
        if not admission.take(chunk):
            self.release()
            return False
        self._held += chunk
        return True

    def _overloaded(self) -> BodyRefused:
        assert self._limits.admission is not None
        status, body, headers = self._limits.admission.overloaded()
        return BodyRefused(status, body, {**headers, "Connection": "close"})

    def release(self) -> None:
        if self._held and self._limits.admission is not None:
            self._limits.admission.give(self._held)
        self._held = 0


async def _reject(send: Send, refusal: BodyRefused) -> None:
    body = json.dumps(refusal.body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in refusal.headers.items()]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
