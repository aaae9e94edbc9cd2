"""A stand-in for the vendors' status APIs: a small HTTP/1.1 server on 127.0.0.1, port 0.

It runs on the test's own event loop and answers each path with scripted replies, in order, the
last one repeating: fixture files, 404s, bodies that are not JSON, replies that come too late,
connections dropped without a word. Every request is recorded::

    async with StatusServer() as server:
        server.serve("/api/v2/summary.json", fixture_reply("statuspage_summary_incident.json"))
        server.serve("/slow.json", Reply(delay_s=30))
        ...
        [request] = server.requests_to("/api/v2/summary.json")

One request per connection (``Connection: close``), which is all a status check needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

HOST = "127.0.0.1"
SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = SHARED / "fixtures" / "provider-status"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    #: wait this long before answering (a slow or hung endpoint); the server's close cuts it short
    delay_s: float = 0.0
    #: close the connection without answering
    drop: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode()))


def json_reply(document: Any, status: int = 200) -> Reply:
    return Reply(status=status, body=json.dumps(document).encode())


def fixture(name: str) -> Any:
    """A shared fixture, parsed; tests skip before calling this when ``../shared`` is absent."""
    return json.loads((FIXTURES / name).read_text())


def fixture_reply(name: str, edit: Callable[[Any], Any] | None = None) -> Reply:
    document = fixture(name)
    return json_reply(edit(document) if edit else document)


class StatusServer:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._routes: dict[str, list[Reply]] = {}
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def serve(self, path: str, *replies: Reply) -> None:
        """Answer ``path`` (no query) with ``replies`` in order, the last one repeating."""
        if not replies:
            raise ValueError("at least one reply")
        self._routes[path] = list(replies)

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.close()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=10)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            request = await _read_request(reader)
            if request is not None:
                self.requests.append(request)
                await self._answer(request, writer)
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, request: Request, writer: asyncio.StreamWriter) -> None:
        replies = self._routes.get(request.path)
        reply = (replies.pop(0) if len(replies) > 1 else replies[0]) if replies else Reply(404, b"{}")
        if reply.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), reply.delay_s)
            if self._closing.is_set():
                return
        if reply.drop:
            return
        writer.write(_response_bytes(reply))
        with contextlib.suppress(OSError):
            await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    """The request on this connection; None when the client went away before sending one."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        return await _parse(head, reader)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        return None


async def _parse(head: bytes, reader: asyncio.StreamReader) -> Request:
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = {}
    for line in filter(None, header_lines):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    parts = urlsplit(target)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return Request(method, unquote(parts.path), query, headers, body)


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection to it is refused at once."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]


def _response_bytes(reply: Reply) -> bytes:
    try:
        phrase = HTTPStatus(reply.status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [
        f"HTTP/1.1 {reply.status} {phrase}",
        f"Content-Type: {reply.content_type}",
        f"Content-Length: {len(reply.body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in reply.headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + reply.body
