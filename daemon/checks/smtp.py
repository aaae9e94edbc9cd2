"""The SMTP provider check: one short submission conversation, no mail sent.

Each run resolves the host, connects, reads the greeting, says EHLO, upgrades with STARTTLS (or
starts in implicit TLS), authenticates when a username is configured, sends NOOP and QUIT, all
inside one ``asyncio.timeout``. The stage it reached names the reason when something fails.

Outcomes, by RFC 5321 §4.2.1 reply classes (https://www.rfc-editor.org/rfc/rfc5321#section-4.2.1)
and RFC 4954 §6 for AUTH (https://www.rfc-editor.org/rfc/rfc4954#section-6):

=================================================  ===========
what happened                                      status
=================================================  ===========
every stage answered as expected                   OK
530 / 534 / 535 to AUTH                            CREDENTIALS
any other 4xx or 5xx, at any stage                 DOWN
refused, closed, TLS or certificate failure        DOWN
timed out (resolving excepted)                     DOWN
the name does not resolve, or resolving times out  UNKNOWN
no route to the network at all                     UNKNOWN
=================================================  ===========

With XOAUTH2 (``oauth2`` settings, :mod:`daemon.checks.oauth`) the AUTH stage presents an access
token instead of a password; a refused token is CREDENTIALS and is dropped from the cache. A token
endpoint that refuses the client is CREDENTIALS too; one that cannot be reached is UNKNOWN.

When TLS verified the server's certificate, a certificate that expires in fewer than
``cert_warn_days`` days is DEGRADED (mail still flows; someone must renew it before it stops).
An expired one fails verification: DOWN.

Name resolution is done here, apart from the connect, because a resolver that fails or hangs is
most often our own network, not the provider. The TCP connect is ours too, so a silent server
(connected, never greets) is told apart from one that cannot be reached.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosmtplib

from channels.base import ChannelConfigError
from channels.email import SmtpSettings, tls_context
from daemon.checks.oauth import OAuthError, TokenSource
from daemon.core.model import CheckResult, CheckStatus

_AUTH_CODES = frozenset({530, 534, 535})
_REPLY_MAX = 200
#: these errnos mean no packet left this host, so they say nothing about the provider
_LOCAL_ERRNOS = frozenset({errno.ENETUNREACH, errno.ENETDOWN})

Verdict = tuple[CheckStatus, str]


class SmtpCheckConfigError(ValueError):
    """The SMTP check's settings are unusable."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SmtpCheck:
    """Probe one SMTP server the way the email channel will use it.

    ``timeout_s`` bounds a whole run and ``token_source`` gives the XOAUTH2 tokens: the settings'
    own ``timeout_s`` and ``token`` are the channel's. A certificate that expires in fewer than
    ``cert_warn_days`` days is DEGRADED; 0 turns that off.
    """

    def __init__(
        self,
        name: str,
        settings: SmtpSettings,
        *,
        timeout_s: float,
        cert_warn_days: int = 14,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        token_source: TokenSource | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise SmtpCheckConfigError(f"check {name}: timeout must be positive, got {timeout_s}")
        if not settings.host:
            raise SmtpCheckConfigError(f"check {name}: no host")
        if settings.token is not None:
            raise SmtpCheckConfigError(f"check {name}: give XOAUTH2 tokens as token_source")
        try:
            _client(settings, settings.helo, None)
        except ValueError as exc:
            raise SmtpCheckConfigError(f"check {name}: {exc}") from exc
        self.name = name
        self._settings = settings
        self._timeout_s = timeout_s
        self._clock = clock
        self._monotonic = monotonic
        self._tls_context = _tls_context(settings)
        self._cert_warn_days = cert_warn_days
        self._local_hostname = settings.helo
        self._tokens = token_source

    async def run(self) -> CheckResult:
        started = self._monotonic()
        status, reason = await self.session(lambda conversation: conversation.probe())
        return CheckResult(self.name, status, self.redact(reason), self._monotonic() - started, self._clock())

    def redact(self, reason: str) -> str:
        return redact(reason, self._settings.password, self._tokens)

    async def aclose(self) -> None:
        """Each run opens and closes its own connection; only a token client may be held."""
        if self._tokens is not None:
            await self._tokens.aclose()

    async def session(self, use: Callable[[Conversation], Awaitable[Verdict]]) -> Verdict:
        """Open a conversation, hand it to ``use``, and turn whatever goes wrong into a verdict.

        The round-trip check sends its canary through here, so both checks read failures alike.
        """
        conversation = Conversation(self._settings, self._tls_context, self._tokens, self._cert_warn_days)
        try:
            async with asyncio.timeout(self._timeout_s):
                conversation.stage = "local hostname"
                if self._local_hostname is None:
                    self._local_hostname = await asyncio.to_thread(socket.getfqdn)
                await conversation.open(self._local_hostname)
                return await use(conversation)
        except TimeoutError:
            return timeout_verdict(conversation.stage, self._timeout_s)
        except aiosmtplib.SMTPResponseException as exc:
            return conversation.refused(exc.code, exc.message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return conversation.refused(exc.recipients[0].code, exc.recipients[0].message)
        except OAuthError as exc:
            return exc.status, f"{conversation.stage}: {exc.reason}"
        except (aiosmtplib.SMTPException, OSError) as exc:
            return failure_verdict(conversation.stage, exc, self._settings)
        finally:
            conversation.close()


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
        client = self._client = _client(settings, local_hostname, self._tls_context)
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
        await client.auth_xoauth2(username, await self._tokens.token())

    def refused(self, code: int, message: str) -> Verdict:
        """A reply refused the step in progress; a refused token is dropped from the cache."""
        verdict = reply_verdict(self.stage, code, message)
        if verdict[0] is CheckStatus.CREDENTIALS and self._tokens is not None:
            self._tokens.invalidate()
        return verdict

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _client(
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


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    """The channel's context, so the check trusts exactly the certificates the channel trusts."""
    try:
        return tls_context(settings)
    except ChannelConfigError as exc:
        raise SmtpCheckConfigError(str(exc)) from exc


def certificate_verdict(peer_cert: dict[str, Any] | None, now: datetime, warn_days: int) -> Verdict | None:
    """DEGRADED when the certificate TLS already accepted expires within ``warn_days``; else None.

    ``peer_cert`` is :meth:`ssl.SSLSocket.getpeercert`: empty when not verified (``verify_tls``
    off, so there is nothing trustworthy to read), None without TLS.
    """
    not_after = (peer_cert or {}).get("notAfter")
    if not isinstance(not_after, str) or warn_days <= 0:
        return None
    expires_at = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)
    left = expires_at - now
    if left >= timedelta(days=warn_days):
        return None
    when = expires_at.strftime("%Y-%m-%d %H:%M UTC")
    return CheckStatus.DEGRADED, f"TLS certificate expires in {left.days} day(s), at {when}: renew it"


def reply_verdict(stage: str, code: int, message: str) -> Verdict:
    reply = f"{stage}: {code} {_one_line(message)}"
    if stage == "auth" and code in _AUTH_CODES:
        return CheckStatus.CREDENTIALS, f"{reply} (authentication failed: credentials need renewing)"
    if 400 <= code < 500:
        return CheckStatus.DOWN, f"{reply} (temporary 4xx)"
    if 500 <= code < 600:
        return CheckStatus.DOWN, f"{reply} (permanent 5xx)"
    return CheckStatus.DOWN, f"{reply} (unexpected reply)"


def timeout_verdict(stage: str, timeout_s: float) -> Verdict:
    reason = f"timed out after {timeout_s:g}s at stage {stage}"
    if stage in ("local hostname", "resolve"):
        return CheckStatus.UNKNOWN, f"{reason} (our resolver is not answering)"
    return CheckStatus.DOWN, reason


def failure_verdict(stage: str, exc: BaseException, settings: SmtpSettings) -> Verdict:
    cause = _root_cause(exc)
    where = f"{settings.host}:{settings.port}"
    if isinstance(cause, socket.gaierror):
        return CheckStatus.UNKNOWN, f"{stage}: cannot resolve {settings.host} ({cause.strerror})"
    if isinstance(cause, ConnectionRefusedError):
        return CheckStatus.DOWN, f"{stage}: connection refused by {where}"
    if isinstance(cause, ssl.SSLCertVerificationError):
        return CheckStatus.DOWN, f"{stage}: TLS certificate rejected: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError):
        return CheckStatus.DOWN, f"{stage}: TLS handshake failed: {cause.reason or cause}"
    if isinstance(cause, OSError) and cause.errno in _LOCAL_ERRNOS:
        return CheckStatus.UNKNOWN, f"{stage}: {cause.strerror} (no route from here to {where})"
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return CheckStatus.DOWN, f"{stage}: connection closed by the server"
    detail = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
    return CheckStatus.DOWN, f"{stage}: {_one_line(detail or type(cause).__name__)}"


def _root_cause(exc: BaseException) -> BaseException:
    """aiosmtplib wraps socket errors (``raise SMTPConnectError(...) from exc``); the cause says more."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _REPLY_MAX else line[: _REPLY_MAX - 1] + "…"


def redact(reason: str, password: str | None, tokens: TokenSource | None = None) -> str:
    """A server may echo what it was sent; no secret ever reaches a log or the store."""
    for secret in (password, tokens.secret if tokens is not None else None):
        reason = reason.replace(secret, "***") if secret else reason
    return reason
