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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosmtplib

from daemon.core.model import CheckResult, CheckStatus

_AUTH_CODES = frozenset({530, 534, 535})
_REPLY_MAX = 200
#: these errnos mean no packet left this host, so they say nothing about the provider
_LOCAL_ERRNOS = frozenset({errno.ENETUNREACH, errno.ENETDOWN})

Verdict = tuple[CheckStatus, str]


class SmtpCheckConfigError(ValueError):
    """The SMTP check's settings are unusable."""


@dataclass(frozen=True)
class SmtpProbeSettings:
    host: str
    port: int = 587
    #: upgrade with STARTTLS (submission, RFC 6409); ignored when ``tls`` (implicit TLS, RFC 8314) is set
    starttls: bool = True
    tls: bool = False
    username: str | None = None
    password: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    helo: str | None = None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SmtpCheck:
    """Probe one SMTP server the way the email channel will use it."""

    def __init__(
        self,
        name: str,
        settings: SmtpProbeSettings,
        *,
        timeout_s: float,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_s <= 0:
            raise SmtpCheckConfigError(f"check {name}: timeout must be positive, got {timeout_s}")
        if not settings.host:
            raise SmtpCheckConfigError(f"check {name}: no host")
        try:
            _client(settings, settings.helo, None)
        except ValueError as exc:
            raise SmtpCheckConfigError(f"check {name}: {exc}") from exc
        self.name = name
        self._settings = settings
        self._timeout_s = timeout_s
        self._clock = clock
        self._monotonic = monotonic
        self._tls_context = tls_context(settings)
        self._local_hostname = settings.helo

    async def run(self) -> CheckResult:
        started = self._monotonic()
        status, reason = await self._verdict()
        reason = redact(reason, self._settings.password)
        return CheckResult(self.name, status, reason, self._monotonic() - started, self._clock())

    async def aclose(self) -> None:
        """Nothing is held between runs: each one opens and closes its own connection."""

    async def _verdict(self) -> Verdict:
        conversation = _Conversation(self._settings, self._tls_context)
        try:
            async with asyncio.timeout(self._timeout_s):
                conversation.stage = "local hostname"
                if self._local_hostname is None:
                    self._local_hostname = await asyncio.to_thread(socket.getfqdn)
                return await conversation.walk(self._local_hostname)
        except TimeoutError:
            return timeout_verdict(conversation.stage, self._timeout_s)
        except aiosmtplib.SMTPResponseException as exc:
            return reply_verdict(conversation.stage, exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            return failure_verdict(conversation.stage, exc, self._settings)
        finally:
            conversation.close()


class _Conversation:
    """One run's SMTP session; ``stage`` names the step in progress, for the reason."""

    def __init__(self, settings: SmtpProbeSettings, tls_context: ssl.SSLContext) -> None:
        self.stage = "start"
        self._settings = settings
        self._tls_context = tls_context
        self._client: aiosmtplib.SMTP | None = None

    async def walk(self, local_hostname: str) -> Verdict:
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
        passed = ["tls", "greeting"] if settings.tls else ["greeting"]
        await self._step("ehlo", client.ehlo(), passed)
        if settings.starttls and not settings.tls:
            await self._step("starttls", client.starttls(), passed)
            await self._step("ehlo after starttls", client.ehlo(), passed)
        verdict = certificate_verdict(client.get_transport_info("peercert"))
        if settings.username is not None:
            await self._step("auth", client.login(settings.username, settings.password or ""), passed)
        await self._step("noop", client.noop(), passed)
        await self._step("quit", client.quit(), passed)
        return verdict or (CheckStatus.OK, "ok: " + ", ".join(passed))

    async def _step(self, stage: str, command: Awaitable[object], passed: list[str]) -> None:
        self.stage = stage
        await command
        passed.append(stage)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _client(
    settings: SmtpProbeSettings, local_hostname: str | None, tls_context: ssl.SSLContext | None
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


def tls_context(settings: SmtpProbeSettings) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise SmtpCheckConfigError(f"cannot load CA file {settings.ca_file}: {exc}") from exc
    if not settings.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def certificate_verdict(peer_cert: dict[str, Any] | None) -> Verdict | None:
    """Room for issue 4 (certificate expiry): a verdict about the certificate TLS already accepted.

    ``peer_cert`` is :meth:`ssl.SSLSocket.getpeercert` (empty when not verified, None without TLS).
    Until issue 4, a certificate that passed verification needs no verdict of its own.
    """
    del peer_cert
    return None


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


def failure_verdict(stage: str, exc: BaseException, settings: SmtpProbeSettings) -> Verdict:
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


def redact(reason: str, password: str | None) -> str:
    """A server may echo what it was sent; the password never reaches a log or the store."""
    return reason.replace(password, "***") if password else reason
