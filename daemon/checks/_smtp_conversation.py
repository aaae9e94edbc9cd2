"""One run's SMTP conversation: resolve, connect, greet, EHLO, STARTTLS, AUTH, then the caller's ending.

The SMTP check ends it with NOOP and QUIT (:meth:`Conversation.probe`); the round-trip check sends
its canary through the same conversation, so both read failures alike.

Name resolution is done here, apart from the connect, because a resolver that fails or hangs is
most often our own network, not the provider. The TCP connect is ours too, so a silent server
(connected, never greets) is told apart from one that cannot be reached.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import aiosmtplib

from channels.email import SmtpSettings
from daemon.checks._mail import Verdict, certificate_verdict
from daemon.checks._smtp_verdicts import TOKEN_STAGE, reply_verdict
from daemon.checks.oauth import OAuthError, TokenSource
from daemon.core.model import CheckStatus


class Conversation:
    """One run's SMTP session; ``stage`` names the step in progress, for the reason."""

    def __init__(
        self,
        settings: SmtpSettings,
        tls_context: ssl.SSLContext,
        tokens: TokenSource | None,
        cert_warn_days: int,
    ) -> None:
        self.stage = "start"
        self.passed: list[str] = []
        self.certificate: Verdict | None = None
        self._settings = settings
        self._tls_context = tls_context
        self._tokens = tokens
        self._cert_warn_days = cert_warn_days
        self._client: aiosmtplib.SMTP | None = None

    async def open(self, local_hostname: str) -> None:
        """Connect, greet, upgrade to TLS and authenticate, as configured."""
        settings = self._settings
        client = self._client = make_client(settings, local_hostname, self._tls_context)
        self.stage = "resolve"
        addresses = await _resolve(settings.host, settings.port)
        self.stage = "connect"
        sock = await _connect(addresses)
        self.stage = "tls handshake/greeting" if settings.tls else "greeting"
        # Nothing can fail or be cancelled between the connect above and this hand-over (the
        # client is built, the TLS context and local name are given), so the socket cannot leak:
        # from here asyncio's transport owns it and closes it on any failure.
        await client.connect(sock=sock)
        self.passed = ["tls", "greeting"] if settings.tls else ["greeting"]
        await self.step("ehlo", client.ehlo())
        if settings.starttls and not settings.tls:
            await self.step("starttls", client.starttls())
            await self.step("ehlo after starttls", client.ehlo())
        peer_cert = client.get_transport_info("peercert")
        self.certificate = certificate_verdict(peer_cert, datetime.now(UTC), self._cert_warn_days)
        if settings.username is not None:
            await self.step("auth", self._authenticate(client, settings.username))

    async def probe(self) -> Verdict:
        """The SMTP check's own ending: NOOP and QUIT, no mail sent."""
        client = self.client
        await self.step("noop", client.noop())
        await self.step("quit", client.quit())
        return self.certificate or (CheckStatus.OK, "ok: " + ", ".join(self.passed))

    @property
    def client(self) -> aiosmtplib.SMTP:
        assert self._client is not None, "open() first"
        return self._client

    async def step(self, stage: str, command: Awaitable[object]) -> None:
        self.stage = stage
        await command
        self.passed.append(stage)

    async def _authenticate(self, client: aiosmtplib.SMTP, username: str) -> None:
        if self._tokens is None:
            await client.login(username, self._settings.password or "")
            return
        stage, self.stage = self.stage, TOKEN_STAGE  # a hung token endpoint is not the provider's
        try:
            token = await self._tokens.token()
        except OAuthError:  # reported as the auth step's, as it always was
            self.stage = stage
            raise
        self.stage = stage
        await client.auth_xoauth2(username, token)

    def refused(self, code: int, message: str) -> Verdict:
        """A reply refused the step in progress; a refused token is dropped from the cache."""
        verdict = reply_verdict(self.stage, code, message)
        if verdict[0] is CheckStatus.CREDENTIALS and self._tokens is not None:
            self._tokens.invalidate()
        return verdict

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def make_client(
    settings: SmtpSettings, local_hostname: str | None, tls_context: ssl.SSLContext | None
) -> aiosmtplib.SMTP:
    """The client for one run; raises ValueError for settings aiosmtplib refuses (a line break)."""
    return aiosmtplib.SMTP(
        hostname=settings.host,
        local_hostname=local_hostname,
        timeout=None,  # the run's asyncio.timeout bounds every step
        use_tls=settings.tls,
        start_tls=False,
        tls_context=tls_context,
    )


async def _resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    loop = asyncio.get_running_loop()
    return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)


async def _connect(addresses: list[tuple[Any, ...]]) -> socket.socket:
    """A connected socket to the first address that accepts; the first address's error if none does."""
    loop = asyncio.get_running_loop()
    errors: list[OSError] = []
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise errors[0]
