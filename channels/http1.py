"""A lean HTTP/1.1 client for the webhook channel: kept-alive connections, answers parsed by llhttp.

Why not httpx: on the Alertmanager benchmark (docs/performance.md, "Webhook delivery path") httpx's
transport over httpcore's pool cost about 0.5-0.9 ms of event-loop CPU per POST, more than the rest
of a delivery. The webhook channel needs one thing: POST a body to an address it has already vetted
and read the status. So there are no redirects, proxies, cookies, compression or HTTP/2 here, and no
timeouts either: the caller bounds the whole exchange (``asyncio.timeout``), and a cancelled
exchange closes its connection.

The request is written here (its headers checked by h11's rules); the answer is parsed by llhttp
through httptools, the C parser uvicorn (and so the daemon's API) already uses. Driving h11 for
both cost about half of the client's CPU per send (docs/performance.md, "Delivery CPU"). Framing
is RFC 9112's: Content-Length, chunked, or (neither) the body ends with the connection;
informational (1xx) answers before the real one are skipped.

The caller picks the address (the SSRF guard's vetted one, :mod:`channels.address_guard`); the host
name is used only for the ``Host`` header (the caller's) and for TLS: SNI and the certificate check.

Errors::

    HttpError              the exchange failed; the request may or may not have been received
      ├── ConnectFailed    no connection (refused, unreachable, TLS handshake or certificate)
      └── InvalidRequest   a header HTTP does not allow: sending again cannot help
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools

#: response bytes read to keep a connection; past this the body is dropped with the connection
MAX_RESPONSE_BYTES = 64 * 1024

Headers = list[tuple[bytes, bytes]]

#: one header as ``name NUL value`` (NUL is in neither) by h11's rules: RFC 9110 token names,
#: values of visible characters or obs-text with inner spaces and tabs. Checked one header at a
#: time: in the joined lines a value holding CRLF would pass for two valid headers
_HEADER = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+\x00(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
_TARGET = re.compile(rb"[\x21-\x7e]+")


class HttpError(Exception):
    """The HTTP exchange failed."""


class ConnectFailed(HttpError):
    """No connection could be made to the address."""


class InvalidRequest(HttpError):
    """The request cannot be written (a header name or value HTTP does not allow)."""


class _Stale(HttpError):
    """A kept-alive connection was closed by the server before it answered."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect: an IP literal and port, and for TLS the name the certificate must carry."""

    address: str
    port: int
    tls_hostname: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    reason: str
    #: lower-case names; the last value of a repeated header
    headers: dict[str, str]


class Http1Pool:
    """POST over kept-alive HTTP/1.1 connections, a few idle ones kept per endpoint."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        *,
        keepalive_s: float = 5.0,
        max_idle: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ssl = ssl_context
        # 5 s like httpx's keepalive_expiry: under the shortest common server idle timeout (Node's 5 s).
        self._keepalive_s = keepalive_s
        self._max_idle = max_idle
        self._clock = clock
        self._idle: dict[Endpoint, list[_Connection]] = {}
        self._closed = False

    async def post(self, endpoint: Endpoint, target: bytes, headers: Headers, body: bytes) -> Reply:
        """Send one POST and read its answer (the body is read and dropped)."""
        request = _request(target, headers, body)
        reused = self._checkout(endpoint)
        if reused is not None:
            try:
                return await self._exchange(endpoint, reused, request)
            except _Stale:
                pass  # closed while idle (the server's keep-alive timeout): once more, on a new one
        return await self._exchange(endpoint, await self._connect(endpoint), request)

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _checkout(self, endpoint: Endpoint) -> _Connection | None:
        idle = self._idle.get(endpoint, [])
        while idle:
            connection = idle.pop()  # the most recent: the least likely to have timed out
            if connection.reusable(self._clock() - self._keepalive_s):
                return connection
            connection.close()
        return None

    async def _connect(self, endpoint: Endpoint) -> _Connection:
        tls = endpoint.tls_hostname is not None
        if tls and self._ssl is None:
            raise ConnectFailed("https needs an SSL context")
        try:
            _, connection = await asyncio.get_running_loop().create_connection(
                _Connection,
                endpoint.address,
                endpoint.port,
                ssl=self._ssl if tls else None,
                server_hostname=endpoint.tls_hostname,
            )
        except OSError as exc:  # ssl.SSLError included
            raise ConnectFailed(_describe(exc)) from exc
        return connection

    async def _exchange(self, endpoint: Endpoint, connection: _Connection, request: bytes) -> Reply:
        try:
            reply, keep = await connection.exchange(request)
        except BaseException:
            connection.close()  # mid-exchange (error, timeout, cancel): its state is unknown
            raise
        if keep and not self._closed and len(idle := self._idle.setdefault(endpoint, [])) < self._max_idle:
            connection.idle_since = self._clock()
            idle.append(connection)
        else:
            connection.close()
        return reply


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: llhttp fed from ``data_received``, one exchange at a time."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        # Lines ending in a bare LF, as h11 (and most clients) read them: a broken server's
        # answer is still its answer.
        self._parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self._transport: asyncio.WriteTransport | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._busy = False
        self._received = False
        self._lost: Exception | None = None
        self._eof = False
        self._usable = True
        self.idle_since = 0.0
        self._answer = _Answer()

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            self._usable = False  # bytes nobody asked for (a parting 408): never reuse this one
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._answer.fail("the server switched protocols")
        except httptools.HttpParserError as exc:
            self._answer.fail(_describe(exc))
        self._wake()

    def eof_received(self) -> bool:
        self._usable = False
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._usable = False
        if exc is not None or not self._eof:  # a clean close after the server's EOF loses nothing
            self._lost = exc or ConnectionResetError("connection lost")
        self._wake()

    # -- llhttp's callbacks (httptools.HTTPProtocol) ----------------------------------------------

    def on_message_begin(self) -> None:
        self._answer.begin()

    def on_status(self, status: bytes) -> None:
        self._answer.status_text(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._answer.header(name, value)

    def on_headers_complete(self) -> None:
        self._answer.headers_complete(self._parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        self._answer.body(len(body))

    def on_message_complete(self) -> None:
        one_one = self._parser.get_http_version() == "1.1"
        self._answer.complete(one_one and self._parser.should_keep_alive())

    # -- the exchange ----------------------------------------------------------------------------

    def reusable(self, fresh_after: float) -> bool:
        return self._usable and self.idle_since > fresh_after

    def close(self) -> None:
        self._usable = False
        if self._transport is not None:
            self._transport.close()

    async def exchange(self, request: bytes) -> tuple[Reply, bool]:
        """Send ``request`` (head and body); the reply, and whether the connection can be kept."""
        assert self._transport is not None
        self._busy, self._received, self._answer = True, False, _Answer()
        answer = self._answer
        try:
            self._transport.write(request)
            while not answer.done:
                if answer.error is not None:
                    raise HttpError(answer.error)
                if self._eof and self._lost is None and answer.ends_with_connection:
                    answer.done = True  # the body ran to the end of the connection
                    break
                if self._lost is not None or self._eof:
                    raise self._closed()
                self._wakeup = asyncio.get_running_loop().create_future()
                await self._wakeup
        finally:
            self._busy = False
        return answer.reply(), answer.keep and not answer.stray and self._usable

    def _closed(self) -> HttpError:
        reason = f"the server closed the connection: {_describe(self._lost)}" if self._lost else ""
        if self._received:
            return HttpError(reason or "the server closed the connection mid-answer")
        # Not a byte of an answer: on a kept-alive connection, the server's idle timeout won the race.
        return _Stale(reason or "the server closed the connection without an answer")

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)


class _Answer:
    """What llhttp has parsed of one exchange's answer; informational (1xx) answers are skipped."""

    def __init__(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: dict[str, str] = {}
        #: the final answer is read whole (or its body is too large to read: ``keep`` stays False)
        self.done = False
        self.keep = False
        #: bytes of another answer after this one: the connection cannot be trusted
        self.stray = False
        self.error: str | None = None
        self._final = False
        self._size = 0

    @property
    def ends_with_connection(self) -> bool:
        """The final answer's head is in, and it frames its body by closing the connection."""
        framed = "content-length" in self.headers or "transfer-encoding" in self.headers
        return self._final and not framed and self.status not in (204, 304)

    def begin(self) -> None:
        if self.done:
            self.stray = True
        elif not self._final:
            self.reason, self.headers = b"", {}

    def status_text(self, reason: bytes) -> None:
        if not self.done:
            self.reason += reason

    def header(self, name: bytes, value: bytes) -> None:
        if not self.done:
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip(" \t")

    def headers_complete(self, status: int) -> None:
        if not self.done and not 100 <= status < 200:
            self.status, self._final = status, True

    def body(self, size: int) -> None:
        self._size += size
        if self._final and not self.done and self._size > MAX_RESPONSE_BYTES:
            self.done = True  # the answer is known; the rest of its body is dropped with the connection

    def complete(self, keep_alive: bool) -> None:
        if self._final and not self.done:
            self.done, self.keep = True, keep_alive

    def fail(self, reason: str) -> None:
        if self.done:
            self.stray = True  # not an answer after the answer: do not reuse the connection
        else:
            self.error = reason

    def reply(self) -> Reply:
        return Reply(status=self.status, reason=self.reason.decode("latin-1"), headers=self.headers)


def _request(target: bytes, headers: Headers, body: bytes) -> bytes:
    """The POST's bytes, refused unless every header is valid and it is framed by ``body``'s length."""
    for name, value in headers:
        if _HEADER.fullmatch(b"%s\x00%s" % (name, value)) is None:
            # Never quote the value: headers carry credentials.
            raise InvalidRequest(f"header {name.decode('latin-1')!r} is not a valid HTTP header")
    names = [name.lower() for name, _ in headers]
    if names.count(b"host") != 1 or names.count(b"content-length") != 1:
        raise InvalidRequest("a POST needs exactly one Host and one Content-Length header")
    if b"transfer-encoding" in names:
        raise InvalidRequest("the body is sent with a Content-Length, not a Transfer-Encoding")
    if headers[names.index(b"content-length")][1] != b"%d" % len(body):
        raise InvalidRequest("Content-Length does not match the body")
    if _TARGET.fullmatch(target) is None:
        raise InvalidRequest("the request target is not valid")
    lines = b"".join(b"%s: %s\r\n" % pair for pair in headers)
    return b"POST %s HTTP/1.1\r\n%s\r\n%s" % (target, lines, body)


def _describe(exc: BaseException | None) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
