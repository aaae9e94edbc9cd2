"""Serving an ASGI app with uvicorn on a socket the daemon bound, with the daemon owning signals.

uvicorn's httptools protocol with what it lacks for a port anyone on the network may reach: the
listener's cap on connections (:mod:`daemon.api.admission`: past ``api.max_connections`` a new
connection is answered 503 and closed as it is accepted) and two deadlines. uvicorn times out a
kept-alive connection only after an answer: a connection that never sends a request, or sends
one a byte at a time, was held for ever (and any byte after an answer, a lone CRLF, cancels its
keep-alive timer for good). Here a connection must begin a request within the idle timeout of
its start or of its last answer, and a request must arrive whole (its body too) within the
request timeout of its first byte, as on the intake workers' port (:mod:`daemon.api.lean_http`). uvicorn's own
``limit_concurrency`` does not fit: it answers its 503 only once a request's headers are in, so
the connections past it are held as long as the client likes, and counts the ones held so.

A request answered before its body arrived (refused from its headers: credentials, a declared size)
is not answered again: uvicorn discards the rest of its body. Kept alive, the connection is idle
from the body's end (uvicorn armed nothing then). Answered with ``Connection: close`` (the intake
endpoints' refusals, :func:`daemon.api.submit.closing`; a body past ``api.max_buffered_body_bytes``),
it is half-closed and what still comes is read and discarded for a moment before it closes, as on
the workers' port: a client still sending its body then reads the answer rather than a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any, cast

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from daemon.api.admission import Admission
from daemon.api.lean_http import IDLE_TIMEOUT_S, REQUEST_TIMEOUT_S
from daemon.api.lean_lifecycle import LINGER_S


class ApiServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon owns the signals: SIGTERM must drain the dispatcher, not just stop HTTP.
        yield


class ServingConfig(uvicorn.Config):
    """uvicorn's configuration, with the listener's admission and the deadlines for its protocol."""

    def __init__(
        self, app: ASGIApp, admission: Admission, idle_timeout_s: float, request_timeout_s: float
    ) -> None:
        super().__init__(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            loop="none",
            http=AdmittingProtocol,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self.admission = admission
        self.idle_timeout_s = idle_timeout_s
        self.request_timeout_s = request_timeout_s


class AdmittingProtocol(HttpToolsProtocol):
    """One connection: admitted under the cap or refused at once; closed past its deadline."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, ServingConfig)
        self._settings = config
        self._admitted = False
        #: a request has begun and is not complete: its request timeout runs
        self._receiving = False
        self._deadline: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport = None  # type: ignore[assignment]  # as uvicorn's, till made
        #: answered and half-closed: what the client still sends is discarded until the close
        self._lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self._settings.admission.admit(transport, len(self.connections)):
            return  # answered 503 and closing: uvicorn never sees it
        self._admitted = True
        self._transport = transport
        super().connection_made(cast(asyncio.Transport, _Lingering(transport, self._close)))
        self._arm(self._settings.idle_timeout_s)

    def data_received(self, data: bytes) -> None:
        if not self._lingering:
            super().data_received(data)

    def _close(self) -> None:
        """uvicorn closing the connection: at once, unless it has just answered a request whose
        body is still arriving; then half-closed, the rest discarded, and closed after LINGER_S."""
        transport = self._transport
        if self._lingering or transport.is_closing():
            return
        cycle = self.cycle  # this request's, answered, while its body is still arriving
        answered = cycle is not None and cycle.scope is self.scope and cycle.response_complete
        if not (answered and self._receiving and transport.can_write_eof()):
            transport.close()
            return
        self._lingering = True
        self._disarm()
        transport.write_eof()
        transport.resume_reading()
        self._deadline = self.loop.call_later(LINGER_S, self._expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._admitted:
            self._settings.admission.left(self._transport)
            super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._receiving = True
        self._arm(self._settings.request_timeout_s)

    def on_message_complete(self) -> None:
        self._receiving = False
        # Answered before its body was in (a 413 by Content-Length, a route that reads none):
        # the rest of the body was the last thing its answer waited for, so the connection is
        # idle now. Disarmed, it had no deadline left: its bytes cancelled uvicorn's keep-alive.
        if self.cycle is not None and self.cycle.response_complete:
            self._arm(self._settings.idle_timeout_s)
        else:
            self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # nothing pipelined to answer next and no request arriving: idle until one begins
        idle = not self.pipeline and not self._receiving
        super().on_response_complete()
        if idle and not self.transport.is_closing():
            self._arm(self._settings.idle_timeout_s)

    def _arm(self, timeout_s: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self._transport.is_closing():
            self._transport.close()


class _Lingering:
    """The connection's transport as uvicorn holds it: every call goes straight through (bound to
    the transport's own methods, so the hot path pays nothing), but ``close`` asks the protocol."""

    def __init__(self, transport: asyncio.Transport, close: Callable[[], None]) -> None:
        self._transport = transport
        self.close = close
        self.write = transport.write
        self.is_closing = transport.is_closing
        self.pause_reading = transport.pause_reading
        self.resume_reading = transport.resume_reading
        self.get_extra_info = transport.get_extra_info

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def server_config(
    app: ASGIApp,
    admission: Admission,
    *,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
) -> uvicorn.Config:
    """uvicorn on the running loop (uvloop under ``backchannel run``), httptools, no access log,
    the listener's ``admission``, a new connection's first request begun within ``idle_timeout_s``
    and every request whole within ``request_timeout_s`` of its first byte."""
    return ServingConfig(app, admission, idle_timeout_s, request_timeout_s)


class ListenError(OSError):
    """A listening address cannot be bound (in use, not an address of this host, a privileged
    port): ``strerror`` names the address, for the one line ``backchannel run`` prints."""


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A non-blocking listening-ready TCP socket on ``host:port`` (port 0: any free port).

    ``reuse_port``: several processes of this user bind the same port and the kernel spreads
    new connections evenly over those listening (the intake workers).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        raise ListenError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock
