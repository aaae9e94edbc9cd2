"""A lean HTTP connection's life apart from parsing: answered in order, paused, refused, timed out, closed.

:class:`ConnectionLifecycle` is the base of :class:`~daemon.api.lean_connection.Connection`, which
parses the requests and queues each complete one here. One task per connection answers the queue
in order, so pipelined requests get their answers in the order they came. Reading pauses while too
many requests wait or the client does not read its answers. A request that cannot be read is
answered after the requests received before it, then the connection lingers a moment (reading and
discarding) and closes. Deadlines: the idle timeout between requests, the request timeout from a
request's first byte to its last; the server's periodic pass calls :meth:`ConnectionLifecycle.expire`.
A graceful stop answers the requests already received, then closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from daemon.api.lean_messages import Reply, Request, encode, error_reply

if TYPE_CHECKING:
    from daemon.api.lean_connection import Server

log = logging.getLogger("daemon.api.lean_http")  # the server logs under one name

#: after refusing a request, how long the connection is still read (and discarded) before closing
LINGER_S = 1.0
#: pipelined requests waiting on one connection before it stops reading
MAX_QUEUED = 32


class ConnectionLifecycle(asyncio.Protocol):
    """One client connection's requests answered in order, its reading paused, its deadlines, its close."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._current = Request()
        #: bytes of the body being received, counted in the listener's ``admission``
        self._held = 0
        #: a request has begun and is not complete: its request timeout runs, not the idle one
        self._receiving = False
        self._queue: deque[Request] = deque()
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

    def _release(self) -> None:
        """Give back what the body being received holds of the listener's buffered bytes."""
        if self._held:
            self._server.admission.give(self._held)
            self._held = 0

    # -- answering -------------------------------------------------------------------------------

    async def _answer(self) -> None:
        while self._queue and not self._closing:
            request = self._queue.popleft()
            try:
                if request.answer is not None:
                    reply = request.answer
                elif request.respond is not None:
                    reply = await request.respond(request.headers, b"".join(request.body))
                else:
                    reply = await self._server.handler(
                        request.method, request.path, request.headers, b"".join(request.body)
                    )
            except Exception:
                log.exception("intake request failed: %s %s", request.method, request.path)
                reply = error_reply(500, "internal_error", "the request failed; nothing was accepted")
                request.keep_alive = False
            # stopping: the last request received is answered with "close"
            keep_alive = request.keep_alive and not (self._finishing and not self._queue)
            self._write(encode(reply, keep_alive=keep_alive, head=request.method == "HEAD"))
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
        self._release()
        if self._receiving:  # never answered: its partial body need not wait for the close
            self._current.body.clear()
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

    # -- deadlines and the close --------------------------------------------------------------------

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
