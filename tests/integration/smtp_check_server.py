"""A scriptable SMTP server for the SMTP check's tests, on the test's own event loop.

aiosmtpd speaks the real protocol (EHLO, STARTTLS, AUTH, NOOP, QUIT). What aiosmtpd cannot be
told to do, greet with an error or never greet at all, is a tiny raw protocol picked per
connection from :class:`Script`, which tests may change between runs::

    async with CheckSmtpServer(tls="starttls", cert=cert, credentials=("probe", "s3cret")) as server:
        server.script.noop = "421 4.3.2 Shutting down"
        ...

XOAUTH2 (https://developers.google.com/gmail/imap/xoauth2-protocol) is offered too: the bearer
tokens in ``server.tokens`` are accepted, each attempt's token is in ``server.bearer_tokens``.

:func:`refusing_port` gives a port on which every connection is refused, with no race.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

HOST = "127.0.0.1"
TlsMode = Literal["none", "starttls", "implicit"]


@dataclass
class Script:
    """How the next connections are answered; None means as aiosmtpd would."""

    #: sent instead of the 220 greeting, then the connection is closed (e.g. "421 ...", "554 ...")
    greeting: str | None = None
    #: accept the TCP connection and never say a word
    silent: bool = False
    ehlo: str | None = None
    noop: str | None = None
    rcpt: str | None = None


class _Handler:
    def __init__(self, script: Script, tokens: set[str], seen: list[str]) -> None:
        self._script = script
        self._tokens = tokens
        self._seen = seen

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """``user=U^Aauth=Bearer T^A^A``; a refusal is a 334 carrying a JSON error, then 535."""
        initial = args[1] if len(args) > 1 else ""
        fields = dict(
            part.split("=", 1) for part in base64.b64decode(initial).decode().split("\x01") if "=" in part
        )
        token = fields.get("auth", "").removeprefix("Bearer ")
        self._seen.append(token)
        if token in self._tokens:
            return AuthResult(success=True, auth_data=fields.get("user"))
        error = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.test/"})
        await server.challenge_auth(error)
        return AuthResult(success=False, handled=False)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        if self._script.ehlo is not None:
            return [self._script.ehlo]
        session.host_name = hostname
        return responses

    async def handle_NOOP(self, server: Any, session: Any, envelope: Any, arg: str) -> str:
        return self._script.noop or "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self._script.rcpt is not None:
            return self._script.rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"


class _Scripted(asyncio.Protocol):
    """Greets with a scripted reply and hangs up, or never greets."""

    def __init__(self, greeting: str | None) -> None:
        self._greeting = greeting
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self._greeting is not None:
            transport.write(f"{self._greeting}\r\n".encode())
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class CheckSmtpServer:
    """An SMTP server on 127.0.0.1, port 0, serving until the ``async with`` block ends."""

    def __init__(
        self,
        *,
        tls: TlsMode = "none",
        cert: trustme.LeafCert | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        if tls != "none" and cert is None:
            raise ValueError("a TLS mode needs a certificate")
        self.script = Script()
        #: bearer tokens XOAUTH2 accepts, and the ones presented so far
        self.tokens: set[str] = set()
        self.bearer_tokens: list[str] = []
        self.port = 0
        self._tls = tls
        self._context = _server_context(cert) if cert is not None else None
        self._credentials = credentials
        self._server: asyncio.Server | None = None
        self._protocols: list[asyncio.BaseProtocol] = []

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        ssl_context = self._context if self._tls == "implicit" else None
        self._server = await loop.create_server(self._protocol, HOST, 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for protocol in self._protocols:
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.close()
        await self._server.wait_closed()
        await _drained(self._protocols)

    def _protocol(self) -> asyncio.BaseProtocol:
        protocol: asyncio.BaseProtocol
        if self.script.silent or self.script.greeting is not None:
            protocol = _Scripted(None if self.script.silent else self.script.greeting)
        else:
            protocol = self._smtp()
        self._protocols.append(protocol)
        return protocol

    def _smtp(self) -> SMTP:
        return SMTP(
            _Handler(self.script, self.tokens, self.bearer_tokens),
            hostname="check.test",
            tls_context=self._context if self._tls == "starttls" else None,
            authenticator=self._authenticate if self._credentials else None,
            auth_require_tls=self._tls == "starttls",
            loop=asyncio.get_running_loop(),
        )

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        good = isinstance(auth_data, LoginPassword) and self._credentials == (
            auth_data.login.decode(),
            auth_data.password.decode(),
        )
        return AuthResult(success=good, handled=False)


async def _drained(protocols: list[asyncio.BaseProtocol], timeout_s: float = 5.0) -> None:
    """Wait, within a deadline, for every connection to be gone, so no socket outlives the test."""
    async with asyncio.timeout(timeout_s):
        while any(getattr(p, "transport", None) is not None for p in protocols):
            await asyncio.sleep(0.01)


def _server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port bound but never listening: Linux answers every connect with RST, refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]
