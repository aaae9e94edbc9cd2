"""The pool of :mod:`channels.http1`: POST over kept-alive connections, a few idle ones kept per endpoint."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

from channels.http1 import ConnectFailed, Endpoint, Headers, Reply, _describe, _request, _Stale
from channels.http1_connection import _Connection


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
