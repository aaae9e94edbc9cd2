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

The pool is in :mod:`channels.http1_pool`; one connection, and what llhttp parses of its answers,
in :mod:`channels.http1_connection`.

Errors::

    HttpError              the exchange failed; the request may or may not have been received
      ├── ConnectFailed    no connection (refused, unreachable, TLS handshake or certificate)
      └── InvalidRequest   a header HTTP does not allow: sending again cannot help
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
