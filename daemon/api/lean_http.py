"""A small HTTP/1.1 server for the intake workers: httptools' parser, one handler, JSON answers.

The intake workers answer three POST endpoints and a health check, all with small JSON bodies.
Through uvicorn and ASGI a worker spent about 190 µs of event-loop CPU per one-alert request, most
of it in the ASGI machinery (the scope, receive/send coroutines and messages, a task per request,
the body-limit wrapper) rather than in the intake itself. This server parses with the same C
parser uvicorn uses (httptools/llhttp) and calls the handler with the method, path, lower-cased
headers and body; everything the intake needs and nothing else. The API port keeps uvicorn.

HTTP it handles: keep-alive (HTTP/1.1 by default, HTTP/1.0 on request) and pipelined requests
(answered in order), Content-Length and chunked bodies, ``Expect: 100-continue``, a body limit
(413 before the body is read when Content-Length says so, else as soon as it is exceeded, then the
connection is closed), malformed requests and upgrades (400, closed), an idle timeout on kept-alive
connections, and a graceful stop that answers every request already received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import httptools

log = logging.getLogger(__name__)

#: (status, JSON body, extra headers)
Reply = tuple[int, dict[str, Any], dict[str, str]]
#: method, path, headers (names lower-cased, the last value wins), body
Handler = Callable[[str, str, dict[str, str], bytes], Awaitable[Reply]]

IDLE_TIMEOUT_S = 5.0
#: pipelined requests waiting on one connection before it stops reading
MAX_QUEUED = 32
REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def encode(reply: Reply, *, keep_alive: bool) -> bytes:
    status, body, extra = reply
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    head = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}",
        "content-type: application/json",
        f"content-length: {len(payload)}",
    ]
    head += [f"{name}: {value}" for name, value in extra.items()]
    if not keep_alive:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload


def _error(status: int, code: str, message: str) -> Reply:
    return status, {"error": code, "message": message}, {}


class LeanServer:
    """Serve ``handler`` on listening sockets until :meth:`stop`."""

    def __init__(self, handler: Handler, max_body_bytes: int, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_s = idle_timeout_s
        self.connections: set[_Connection] = set()
        self._servers: list[asyncio.Server] = []
        self._all_closed = asyncio.Event()

    async def start(self, sock: Any) -> None:
        loop = asyncio.get_running_loop()
        self._servers.append(await loop.create_server(lambda: _Connection(self), sock=sock, backlog=1024))

    async def stop(self, grace_s: float) -> None:
        """Stop accepting; answer what was received within ``grace_s``; close every connection."""
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            connection.finish()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), grace_s)
        for connection in list(self.connections):
            connection.abort()

    def closed(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._all_closed.set()


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "path")

    def __init__(self) -> None:
        self.method = ""
        self.path = ""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.keep_alive = True


class _Connection(asyncio.Protocol):
    def __init__(self, server: LeanServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._current = _Request()
        self._url = b""
        self._size = 0
        self._queue: deque[_Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._closing = False
        self._paused = False

    # -- transport ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports quack alike
        self._server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.closed(self)
        self._closing = True
        if self._idle is not None:
            self._idle.cancel()
        if self._task is not None:
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(_error(400, "bad_request", "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _TooLarge):  # raised in a callback, wrapped by the parser
                limit = self._server.max_body_bytes
                self._refuse(_error(413, "too_large", f"request body exceeds {limit} bytes"))
            else:
                self._refuse(_error(400, "bad_request", f"malformed HTTP request: {exc}"))

    # -- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._current = _Request()
        self._url = b""
        self._size = 0
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._current.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        request = self._current
        request.method = self._parser.get_method().decode("latin-1")
        request.path = httptools.parse_url(self._url).path.decode("latin-1")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._server.max_body_bytes:
            raise _TooLarge
        if request.headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._server.max_body_bytes:
            raise _TooLarge
        self._current.body.append(body)

    def on_message_complete(self) -> None:
        self._current.keep_alive = self._parser.should_keep_alive()
        self._queue.append(self._current)
        if len(self._queue) >= MAX_QUEUED and self._transport is not None and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._answer())

    # -- answering -------------------------------------------------------------------------------

    async def _answer(self) -> None:
        while self._queue and not self._closing:
            request = self._queue.popleft()
            try:
                reply = await self._server.handler(
                    request.method, request.path, request.headers, b"".join(request.body)
                )
            except Exception:
                log.exception("intake request failed: %s %s", request.method, request.path)
                reply = _error(500, "internal_error", "the request failed; nothing was accepted")
                request.keep_alive = False
            self._write(encode(reply, keep_alive=request.keep_alive))
            if not request.keep_alive:
                self._close()
                return
            if self._paused and len(self._queue) < MAX_QUEUED // 2 and self._transport is not None:
                self._paused = False
                self._transport.resume_reading()
        self._task = None
        if not self._closing:
            self._arm_idle()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _refuse(self, reply: Reply) -> None:
        """Answer a request that cannot be read further, then close (pipelined ones are dropped)."""
        self._queue.clear()
        self._write(encode(reply, keep_alive=False))
        self._close()

    def _arm_idle(self) -> None:
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self._server.idle_timeout_s, self._close)

    def finish(self) -> None:
        """Graceful stop: close now if idle, else after the requests already received."""
        if self._task is None:
            self._close()
        else:
            for request in self._queue:
                request.keep_alive = False
            if not self._queue:
                self._closing_after_current()

    def _closing_after_current(self) -> None:
        # the request being answered is not in the queue any more: close once its answer is out
        task = self._task
        if task is not None:
            task.add_done_callback(lambda _: self._close())

    def _close(self) -> None:
        self._closing = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()


class _TooLarge(Exception):
    pass
