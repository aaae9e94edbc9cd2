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
connection is closed), a screen that refuses a request from its headers (the intake's credentials:
answered before its body is read, then closed) or admits it, malformed requests and upgrades (400,
closed), an idle timeout on kept-alive connections, a cap on connections and on the bytes of bodies
still arriving (503, :mod:`daemon.api.admission`), and a graceful stop that answers every request
already received.
This module holds the listeners, the deadlines' sweep and the stop; one connection's parsing is
:mod:`daemon.api.lean_connection`, its answering, deadlines and close :mod:`daemon.api.lean_lifecycle`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from daemon.api.admission import Admission
from daemon.api.lean_connection import Connection, Handler, Screen
from daemon.api.limits import Widen, fixed
from daemon.listeners import close_servers

IDLE_TIMEOUT_S = 5.0
#: from a request's first byte to its last
REQUEST_TIMEOUT_S = 30.0
#: how often the server looks for connections past their deadline, at most
REAP_EVERY_S = 1.0


class LeanServer:
    """Serve ``handler`` on listening sockets until :meth:`stop`."""

    def __init__(
        self,
        handler: Handler,
        max_body_bytes: int,
        *,
        admission: Admission,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        widen: Widen | None = None,
        screen: Screen | None = None,
    ) -> None:
        """``widen``: a larger limit a request may earn (:mod:`daemon.api.limits`); ``admission``:
        how many connections, and how many bytes of bodies still arriving, it holds at once;
        ``screen``: asked once a request's headers are in (:data:`~daemon.api.lean_connection.Screen`)."""
        self.handler = handler
        self.admission = admission
        self.max_body_bytes = max_body_bytes
        self.widen: Widen = widen or fixed(max_body_bytes)
        self.screen = screen
        self.idle_timeout_s = idle_timeout_s
        self.request_timeout_s = request_timeout_s
        self.connections: set[Connection] = set()
        self._servers: list[asyncio.Server] = []
        self._all_closed = asyncio.Event()
        # Timeouts are deadlines the connections set and one periodic pass enforces: a timer
        # handle armed and cancelled twice per request cost more than the rest of the bookkeeping.
        # A connection closes up to a quarter of its timeout (at most REAP_EVERY_S) late.
        self._reap_every_s = max(0.01, min(REAP_EVERY_S, idle_timeout_s / 4, request_timeout_s / 4))
        self._reaper: asyncio.TimerHandle | None = None

    async def start(self, sock: Any) -> None:
        loop = asyncio.get_running_loop()
        self._servers.append(await loop.create_server(lambda: Connection(self), sock=sock, backlog=1024))
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
        for connection in list(self.connections):
            connection.finish()
        await close_servers(self._servers)
        for connection in list(self.connections):  # those accepted as the stop began too
            connection.finish()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), grace_s)
        for connection in list(self.connections):
            connection.abort()
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None

    def closed(self, connection: Connection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._all_closed.set()
