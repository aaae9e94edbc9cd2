"""A lean HTTP/1.1 client for the webhook channel: h11 over an asyncio protocol, kept-alive connections.

Why not httpx: on the Alertmanager benchmark (docs/performance.md, "Webhook delivery path") httpx's
transport over httpcore's pool cost about 0.5-0.9 ms of event-loop CPU per POST, more than the rest
of a delivery; h11 (the parser httpcore itself uses) driven straight from a protocol costs under
0.1 ms. The webhook channel needs one thing: POST a body to an address it has already vetted and
read the status. So there are no redirects, proxies, cookies, compression or HTTP/2 here, and no
timeouts either: the caller bounds the whole exchange (``asyncio.timeout``), and a cancelled
exchange closes its connection.

The caller picks the address (the SSRF guard's vetted one, :mod:`channels.address_guard`); the host
name is used only for the ``Host`` header (the caller's) and for TLS: SNI and the certificate check.

Errors::

    HttpError              the exchange failed; the request may or may not have been received
      ├── ConnectFailed    no connection (refused, unreachable, TLS handshake or certificate)
      └── InvalidRequest   a header HTTP does not allow: sending again cannot help
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import h11

#: response bytes read to keep a connection; past this the body is dropped with the connection
MAX_RESPONSE_BYTES = 64 * 1024

Headers = list[tuple[bytes, bytes]]


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
        try:
            request = h11.Request(method=b"POST", target=target, headers=headers)
        except h11.LocalProtocolError as exc:
            raise InvalidRequest(str(exc)) from exc
        reused = self._checkout(endpoint)
        if reused is not None:
            try:
                return await self._exchange(endpoint, reused, request, body)
            except _Stale:
                pass  # closed while idle (the server's keep-alive timeout): once more, on a new one
        return await self._exchange(endpoint, await self._connect(endpoint), request, body)

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

    async def _exchange(
        self, endpoint: Endpoint, connection: _Connection, request: h11.Request, body: bytes
    ) -> Reply:
        try:
            reply, keep = await connection.exchange(request, body)
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
    """One HTTP/1.1 connection: h11 fed from ``data_received``, one exchange at a time."""

    def __init__(self) -> None:
        self._h11 = h11.Connection(h11.CLIENT)
        self._transport: asyncio.WriteTransport | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._busy = False
        self._received = False
        self._lost: Exception | None = None
        self._eof = False
        self._usable = True
        self.idle_since = 0.0

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            self._usable = False  # bytes nobody asked for (a parting 408): never reuse this one
            return
        self._received = True
        self._h11.receive_data(data)
        self._wake()

    def eof_received(self) -> bool:
        self._usable = False
        self._eof = True
        if self._busy and self._received:
            self._h11.receive_data(b"")  # an answer may end with the connection (no Content-Length)
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._usable = False
        self._lost = exc or ConnectionResetError("connection lost")
        self._wake()

    # -- the exchange ----------------------------------------------------------------------------

    def reusable(self, fresh_after: float) -> bool:
        return self._usable and self.idle_since > fresh_after

    def close(self) -> None:
        self._usable = False
        if self._transport is not None:
            self._transport.close()

    async def exchange(self, request: h11.Request, body: bytes) -> tuple[Reply, bool]:
        """Send ``request`` with ``body``; the reply, and whether the connection can be kept."""
        assert self._transport is not None
        self._busy, self._received = True, False
        h = self._h11
        try:
            self._transport.write(h.send(request) + h.send(h11.Data(data=body)) + h.send(h11.EndOfMessage()))
            response = await self._response()
            keep = await self._drop_body()
        except h11.ProtocolError as exc:
            raise HttpError(_describe(exc)) from exc
        finally:
            self._busy = False
        reply = Reply(
            status=response.status_code,
            reason=response.reason.decode("latin-1"),
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in response.headers},
        )
        return reply, keep

    async def _response(self) -> h11.Response:
        while not isinstance(event := await self._event(), h11.Response):
            pass  # 1xx informational responses come before the real one
        return event

    async def _drop_body(self) -> bool:
        """Read the body to its end if it is small; True if the connection can serve another request."""
        size = 0
        while not isinstance(event := await self._event(), h11.EndOfMessage):
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_RESPONSE_BYTES:
                    return False
        h = self._h11
        # Bytes past the answer (a stray second response) would be read as the next one's answer.
        if h.our_state is h11.DONE and h.their_state is h11.DONE and h.trailing_data == (b"", False):
            h.start_next_cycle()
            return self._usable
        return False

    async def _event(self) -> h11.Event:
        while True:
            event = self._h11.next_event()
            if isinstance(event, h11.Event) and not isinstance(event, h11.ConnectionClosed):
                return event
            if event is not h11.NEED_DATA or self._lost is not None or (self._eof and not self._received):
                raise self._closed()
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup

    def _closed(self) -> HttpError:
        reason = f"the server closed the connection: {_describe(self._lost)}" if self._lost else ""
        if self._received:
            return HttpError(reason or "the server closed the connection mid-answer")
        # Not a byte of an answer: on a kept-alive connection, the server's idle timeout won the race.
        return _Stale(reason or "the server closed the connection without an answer")

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)


def _describe(exc: BaseException | None) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
