"""The lean HTTP server's messages: a request as the parser fills it in, a reply as it goes out.

Also the three reasons a request cannot be read that :class:`~daemon.api.lean_connection.Connection`'s
parser callbacks raise (httptools wraps them in its own error; the connection looks at the cause).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import lru_cache
from http import HTTPStatus
from typing import Any

#: (status, JSON body, extra headers)
Reply = tuple[int, dict[str, Any], dict[str, str]]
#: how a request admitted from its headers is answered once its body is in: (headers, body)
Respond = Callable[[dict[str, str], bytes], Awaitable[Reply]]


class Request:
    """One request as the parser fills it in, queued on its connection until answered.

    ``answer``: decided from its headers (a refusal of a request without a body); ``respond``: what
    its headers admitted it to, called with its body in place of the server's handler.
    """

    __slots__ = ("answer", "body", "headers", "keep_alive", "method", "path", "respond")

    def __init__(self) -> None:
        self.method = ""
        self.path = ""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.keep_alive = True
        self.answer: Reply | None = None
        self.respond: Respond | None = None


#: made once: ``json.dumps`` with arguments builds an encoder for every call
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode(reply: Reply, *, keep_alive: bool, head: bool = False) -> bytes:
    """The answer's bytes; with ``head`` (a HEAD request) its headers alone, the length the body's."""
    status, body, extra = reply
    payload = _JSON.encode(body).encode()
    lines = (
        f"HTTP/1.1 {status} {_reason(status)}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
    )
    for name, value in extra.items():
        lines += f"{name}: {value}\r\n"
    if not keep_alive:
        lines += "connection: close\r\n"
    return (lines + "\r\n").encode("latin-1") + (b"" if head else payload)


@lru_cache(maxsize=128)
def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def error_reply(status: int, code: str, message: str) -> Reply:
    return status, {"error": code, "message": message}, {}


class BodyTooLarge(Exception):
    """The body exceeds the server's limit, by its Content-Length or as it arrives."""


class HeadTooLarge(Exception):
    """The request line and headers exceed the limit."""


class Refused(Exception):
    """Refused from its headers (credentials) while a body is to follow: ``reply``, the body unread."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply[0])
        self.reply = reply
