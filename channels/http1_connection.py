"""One HTTP/1.1 connection of :class:`~channels.http1_pool.Http1Pool`: llhttp (httptools) fed from
``data_received``, one exchange at a time, and what it has parsed of the answer."""

from __future__ import annotations

import asyncio
from typing import cast

import httptools

from channels.http1 import HttpError, Reply, _describe, _Stale

#: response bytes read to keep a connection; past this the body is dropped with the connection
MAX_RESPONSE_BYTES = 64 * 1024


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
