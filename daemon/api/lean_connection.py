"""One connection of the lean HTTP server (:mod:`daemon.api.lean_http`): its requests parsed and refused.

httptools' parser calls back into :class:`Connection` (``on_url``, ``on_header``, ``on_body``...);
each complete request is queued for its base, :class:`~daemon.api.lean_lifecycle.ConnectionLifecycle`,
which answers the requests in order, pauses reading, times the connection out and closes it. A
connection past ``api.max_connections`` is answered 503 and closed as it is accepted
(:mod:`daemon.api.admission`). A request that cannot be read (malformed, an upgrade, headers or body
over the limit, a body arriving while the listener holds ``api.max_buffered_body_bytes``, or refused
by the server's screen from its headers while a body is to follow) is refused: answered after the
requests received before it, then the connection closes. The screen (the intake's credentials) is
asked once a request's headers are in: a request it refuses is never told to ``100 Continue``, and
one without a body is answered its refusal in turn; one it admits is answered, once its body is in,
by what it admitted it to, so the credentials are checked once a request. A request as parsed and a
reply as encoded are :mod:`daemon.api.lean_messages`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

import httptools

from daemon.api.admission import Admission, Overloaded
from daemon.api.lean_lifecycle import MAX_QUEUED, ConnectionLifecycle
from daemon.api.lean_messages import (
    BodyTooLarge,
    HeadTooLarge,
    Refused,
    Reply,
    Request,
    Respond,
    error_reply,
)
from daemon.api.limits import Widen, declares_body

log = logging.getLogger("daemon.api.lean_http")  # the server logs under one name

#: method, path, headers (names lower-cased, the last value wins), body
Handler = Callable[[str, str, dict[str, str], bytes], Awaitable[Reply]]
#: asked with a request's method, path and headers once they are in: its answer now (a refusal,
#: its body left unread), what answers it once its body is in, or None for the handler
Screen = Callable[[str, str, dict[str, str]], Reply | Respond | None]

#: the request line and headers together (uvicorn's h11 default is 16 KiB)
MAX_HEAD_BYTES = 64 * 1024


class Server(Protocol):
    """What a connection needs of its server (:class:`~daemon.api.lean_http.LeanServer`)."""

    handler: Handler
    max_body_bytes: int
    #: a larger limit a request may earn, asked once its body would pass ``max_body_bytes``
    widen: Widen
    screen: Screen | None
    idle_timeout_s: float
    request_timeout_s: float
    connections: set[Connection]
    #: the cap on connections and on the bytes of bodies still arriving
    admission: Admission

    def closed(self, connection: Connection) -> None: ...


class Connection(ConnectionLifecycle):
    """One client connection: requests parsed, limited and screened, then queued to be answered."""

    def __init__(self, server: Server) -> None:
        super().__init__(server)
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._size = 0
        self._head_size = 0
        #: the largest body of the request: the server's, or what ``widen`` gave it (then ``_widened``)
        self._limit = server.max_body_bytes
        self._widened = False
        #: headers done: what ``on_header`` brings now are chunked trailers, which are ignored
        self._in_body = False

    # -- transport ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = live = cast(asyncio.Transport, transport)  # uvloop's quack alike
        if not self._server.admission.admit(live, len(self._server.connections)):
            self._closing = True  # answered 503 and closing: nothing of it is read
            return
        self._server.connections.add(self)
        self._arm(self._server.idle_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        # A handler still running is not cancelled: its commit is kept and reported; the answer
        # has nowhere to go and is dropped.
        if self in self._server.connections and self._transport is not None:  # admitted
            self._server.admission.left(self._transport)
        self._server.closed(self)
        self._closing = True
        self._disarm()
        self._release()

    def data_received(self, data: bytes) -> None:
        if self._closing or self._refused:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._queue:  # the parser completed the upgrade request before raising: not answered
                self._queue.pop()
            self._refuse(error_reply(400, "bad_request", "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                message = f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"
                self._refuse(error_reply(431, "headers_too_large", message))
            elif isinstance(exc.__context__, BodyTooLarge):  # raised in a callback, wrapped by the parser
                limit = self._limit
                self._refuse(error_reply(413, "too_large", f"request body exceeds {limit} bytes"))
            elif isinstance(exc.__context__, Overloaded):
                self._refuse(self._server.admission.overloaded())
            elif isinstance(exc.__context__, Refused):
                self._refuse(exc.__context__.reply)
            else:
                self._refuse(error_reply(400, "bad_request", f"malformed HTTP request: {exc}"))

    # -- parser callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._current = Request()
        self._url = b""
        self._size = 0
        self._head_size = 0
        self._limit, self._widened = self._server.max_body_bytes, False
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
            raise HeadTooLarge

    def on_headers_complete(self) -> None:
        self._in_body = True
        request = self._current
        request.method = self._parser.get_method().decode("latin-1")
        request.path = httptools.parse_url(self._url).path.decode("latin-1")
        declared = request.headers.get("content-length", "")
        if declared.isdigit():
            self._allow(int(declared))  # before 100 Continue: a refused client sends no body
        screen = self._server.screen
        if screen is not None:  # after the size, as the API port: a 413 comes first
            self._screen(screen, request)
        if (
            request.answer is None
            and request.headers.get("expect", "").lower() == "100-continue"
            and self._transport is not None
        ):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _screen(self, screen: Screen, request: Request) -> None:
        """What ``screen`` makes of a request whose headers are in: its answer, or what answers it."""
        try:
            outcome = screen(request.method, request.path, request.headers)
        except Exception:
            log.exception("intake request failed: %s %s", request.method, request.path)
            raise Refused(
                error_reply(500, "internal_error", "the request failed; nothing was accepted")
            ) from None
        if not isinstance(outcome, tuple):
            request.respond = outcome
        elif declares_body(request.headers):
            raise Refused(outcome)  # answered and closed: the body is never read
        else:
            request.answer = outcome  # nothing to read: answered in turn, the connection kept

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        self._allow(self._size)
        if not self._server.admission.take(len(body)):
            raise Overloaded
        self._held += len(body)
        self._current.body.append(body)

    def _allow(self, size: int) -> None:
        """BodyTooLarge for a body of ``size`` past the limit; the first time it would pass the
        server's, the request's path and credentials may earn it a larger one."""
        if size <= self._limit:
            return
        if not self._widened:
            self._widened = True
            authorization = self._current.headers.get("authorization", "")
            self._limit = max(self._limit, self._server.widen(self._current.path, authorization))
        if size > self._limit:
            raise BodyTooLarge

    def on_message_complete(self) -> None:
        self._disarm()
        self._release()
        self._receiving = False
        self._current.keep_alive = self._parser.should_keep_alive()
        self._queue.append(self._current)
        if len(self._queue) >= MAX_QUEUED and not self._too_many:
            self._too_many = True
            self._reading()
        if self._task is None:
            self._task = self._loop.create_task(self._answer())
