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
from http import HTTPStatus
from typing import Any

import httptools

log = logging.getLogger(__name__)

#: (status, JSON body, extra headers)
Reply = tuple[int, dict[str, Any], dict[str, str]]
#: method, path, headers (names lower-cased, the last value wins), body
Handler = Callable[[str, str, dict[str, str], bytes], Awaitable[Reply]]

IDLE_TIMEOUT_S = 5.0
#: from a request's first byte to its last
REQUEST_TIMEOUT_S = 30.0
#: after refusing a request, how long the connection is still read (and discarded) before closing
LINGER_S = 1.0
#: the request line and headers together (uvicorn's h11 default is 16 KiB)
MAX_HEAD_BYTES = 64 * 1024
#: pipelined requests waiting on one connection before it stops reading
MAX_QUEUED = 32
#: how often the server looks for connections past their deadline, at most
REAP_EVERY_S = 1.0


def encode(reply: Reply, *, keep_alive: bool) -> bytes:
    status, body, extra = reply
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    head = [
        f"HTTP/1.1 {status} {_reason(status)}",
        "content-type: application/json",
        f"content-length: {len(payload)}",
    ]
    head += [f"{name}: {value}" for name, value in extra.items()]
    if not keep_alive:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _error(status: int, code: str, message: str) -> Reply:
    return status, {"error": code, "message": message}, {}


class LeanServer:
    """Serve ``handler`` on listening sockets until :meth:`stop`."""

    def __init__(
        self,
        handler: Handler,
        max_body_bytes: int,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.idle_timeout_s = idle_timeout_s
        self.request_timeout_s = request_timeout_s
        self.connections: set[_Connection] = set()
        self._servers: list[asyncio.Server] = []
        self._all_closed = asyncio.Event()
        # Timeouts are deadlines the connections set and one periodic pass enforces: a timer
        # handle armed and cancelled twice per request cost more than the rest of the bookkeeping.
        # A connection closes up to a quarter of its timeout (at most REAP_EVERY_S) late.
        self._reap_every_s = max(0.01, min(REAP_EVERY_S, idle_timeout_s / 4, request_timeout_s / 4))
        self._reaper: asyncio.TimerHandle | None = None

    async def start(self, sock: Any) -> None:
        loop = asyncio.get_running_loop()
        self._servers.append(await loop.create_server(lambda: _Connection(self), sock=sock, backlog=1024))
        if self._reaper is None:
            self._reaper = loop.call_later(self._reap_every_s, self._reap)

    def _reap(self) -> None:
        loop = asyncio.get_running_loop()
        self._reaper = loop.call_later(self._reap_every_s, self._reap)  # first: expire() may raise
        now = loop.time()
        for connection in list(self.connections):
            connection.expire(now)

    async def stop(self, grace_s: float) -> None:
        """Stop accepting; answer what was received within ``grace_s``; close every connection."""
        self._all_closed.clear()  # set by every earlier moment without connections
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            connection.finish()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), grace_s)
        for connection in list(self.connections):
            connection.abort()
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None

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
        self._head_size = 0
        #: headers done: what ``on_header`` brings now are chunked trailers, which are ignored
        self._in_body = False
        #: a request has begun and is not complete: its request timeout runs, not the idle one
        self._receiving = False
        self._queue: deque[_Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        #: (loop time) between requests the idle timeout's; while one arrives, the request timeout's
        self._deadline: float | None = None
        self._closing = False
        self._finishing = False
        #: reading stops while too many requests wait or the client does not read its answers
        self._too_many = False
        self._cannot_write = False
        #: a request could not be read: nothing more is parsed; ``_refusal`` waits for the answers
        #: to the requests received before it
        self._refused = False
        self._refusal: Reply | None = None

    # -- transport ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports quack alike
        self._server.connections.add(self)
        self._arm(self._server.idle_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        # A handler still running is not cancelled: its commit is kept and reported; the answer
        # has nowhere to go and is dropped.
        self._server.closed(self)
        self._closing = True
        self._disarm()

    def pause_writing(self) -> None:
        self._cannot_write = True
        self._reading()

    def resume_writing(self) -> None:
        self._cannot_write = False
        self._reading()

    def _reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._too_many or self._cannot_write:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._closing or self._refused:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._queue:  # the parser completed the upgrade request before raising: not answered
                self._queue.pop()
            self._refuse(_error(400, "bad_request", "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                message = f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"
                self._refuse(_error(431, "headers_too_large", message))
            elif isinstance(exc.__context__, _TooLarge):  # raised in a callback, wrapped by the parser
                limit = self._server.max_body_bytes
                self._refuse(_error(413, "too_large", f"request body exceeds {limit} bytes"))
            else:
                self._refuse(_error(400, "bad_request", f"malformed HTTP request: {exc}"))

    # -- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._current = _Request()
        self._url = b""
        self._size = 0
        self._head_size = 0
        self._in_body = False
        self._receiving = True
        self._arm(self._server.request_timeout_s)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head(len(name) + len(value))
        if not self._in_body:
            self._current.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def _head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD_BYTES:
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        self._in_body = True
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
        self._disarm()
        self._receiving = False
        self._current.keep_alive = self._parser.should_keep_alive()
        self._queue.append(self._current)
        if len(self._queue) >= MAX_QUEUED and not self._too_many:
            self._too_many = True
            self._reading()
        if self._task is None:
            self._task = self._loop.create_task(self._answer())

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
            # stopping: the last request received is answered with "close"
            keep_alive = request.keep_alive and not (self._finishing and not self._queue)
            self._write(encode(reply, keep_alive=keep_alive))
            if not keep_alive:
                self._task = None
                self._close()
                return
            if self._too_many and len(self._queue) < MAX_QUEUED // 2:
                self._too_many = False
                self._reading()
        self._task = None
        if self._refusal is not None:
            self._send_refusal(self._refusal)
        elif self._finishing:
            self._close()
        elif not self._closing and not self._queue and not self._receiving:
            self._arm(self._server.idle_timeout_s)

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _refuse(self, reply: Reply) -> None:
        """Answer a request that cannot be read further, then close; nothing after it is read.

        Requests received whole before it are answered first, in order; the connection is then
        half-closed and read (and discarded) for a moment, so a client still sending its body
        reads the answer rather than a reset.
        """
        self._refused = True
        self._disarm()
        if self._task is None:
            self._send_refusal(reply)
        else:
            self._refusal = reply

    def _send_refusal(self, reply: Reply) -> None:
        self._write(encode(reply, keep_alive=False))
        self._closing = True
        transport = self._transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()
            transport.resume_reading()  # to discard what the client still sends
            self._loop.call_later(LINGER_S, self._close)
        else:
            self._close()

    def _arm(self, timeout_s: float) -> None:
        """Close the connection if nothing changes within ``timeout_s`` (enforced by the server)."""
        self._deadline = self._loop.time() + timeout_s

    def _disarm(self) -> None:
        self._deadline = None

    def expire(self, now: float) -> None:
        if self._deadline is not None and now >= self._deadline:
            self._close()

    def finish(self) -> None:
        """Graceful stop: close now if idle, else once the requests already received are answered."""
        self._finishing = True
        if self._task is None and not self._queue:
            self._close()

    def _close(self) -> None:
        self._closing = True
        self._disarm()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        self._closing = True
        self._disarm()
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.abort()


class _TooLarge(Exception):
    pass


class _HeadTooLarge(Exception):
    pass
