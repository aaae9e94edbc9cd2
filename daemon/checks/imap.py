"""The IMAP provider check: connect, TLS, LOGIN or XOAUTH2, SELECT the mailbox, LOGOUT.

Why imaplib in a thread and not an asyncio IMAP client: imaplib is the standard library, speaks
STARTTLS, implicit TLS and any SASL mechanism (XOAUTH2 is a callback), and its failures are well
known; the one asyncio client with releases (aioimaplib) adds a dependency for a handful of
commands per run. Each run's conversation runs in one worker thread (:func:`asyncio.to_thread`)
with a socket timeout; the run's own ``asyncio.timeout`` shuts the socket down when it fires, so
the thread ends at once rather than when the socket's timeout would.

Outcomes (RFC 3501 §7.1 and the response codes of RFC 5530,
https://www.rfc-editor.org/rfc/rfc5530#section-3):

=======================================================  ===========
what happened                                            status
=======================================================  ===========
every stage answered OK                                  OK
the verified certificate expires within cert_warn_days   DEGRADED
NO to LOGIN / AUTHENTICATE ([AUTHENTICATIONFAILED],      CREDENTIALS
[AUTHORIZATIONFAILED], [EXPIRED] or no code at all)
NO [UNAVAILABLE] / [PRIVACYREQUIRED] / [SERVERBUG],      DOWN
BAD, BYE, NO to SELECT, refused, TLS failure, timeout
the name does not resolve                                UNKNOWN
the OAuth2 token endpoint refuses the client             CREDENTIALS
the OAuth2 token endpoint cannot be asked                UNKNOWN
=======================================================  ===========

:class:`ImapSession` is shared with the round-trip check, which searches and deletes its canaries
in the same kind of session.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, model_validator

from channels.base import ChannelConfigError
from channels.email import SmtpSettings, tls_context
from daemon.checks.oauth import OAuthError, TokenSource, xoauth2
from daemon.checks.smtp import certificate_verdict
from daemon.configbase import Duration, Model, OAuth2Config
from daemon.core.model import CheckResult, CheckStatus

T = TypeVar("T")
Verdict = tuple[CheckStatus, str]
Security = Literal["tls", "starttls", "none"]

#: response codes to LOGIN/AUTHENTICATE that say the server, not our credentials, is the trouble
_SERVER_CODES = frozenset({"UNAVAILABLE", "PRIVACYREQUIRED", "SERVERBUG"})
_CODE = re.compile(r"\[([A-Z-]+)")
_REPLY_MAX = 200


class ImapCheckConfigError(ValueError):
    """The IMAP settings are unusable."""


class MailboxError(Exception):
    """The IMAP session failed; ``status`` and ``reason`` are the run's verdict."""

    def __init__(self, status: CheckStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class ImapProbeSettings:
    host: str
    username: str
    port: int = 993
    #: ``tls`` is implicit TLS (993, RFC 8314); ``starttls`` upgrades on 143; ``none`` is tests only
    security: Security = "tls"
    password: str | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    mailbox: str = "INBOX"
    cert_warn_days: int = 14


class ImapConfig(Model):
    """``imap:`` of an imap or roundtrip check."""

    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    security: Security = "tls"
    username: str = Field(min_length=1)
    password: SecretStr | None = None
    oauth2: OAuth2Config | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    mailbox: str = Field("INBOX", min_length=1)
    cert_warn_days: int = Field(14, ge=0)

    @model_validator(mode="after")
    def _one_secret(self) -> ImapConfig:
        if (self.password is None) == (self.oauth2 is None):
            raise ValueError("give exactly one of password or oauth2")
        return self

    def probe_settings(self) -> ImapProbeSettings:
        default_port = 993 if self.security == "tls" else 143
        password = None if self.password is None else self.password.get_secret_value()
        return ImapProbeSettings(
            self.host, self.username, self.port or default_port, self.security, password,
            self.verify_tls, self.ca_file, self.mailbox, self.cert_warn_days,
        )  # fmt: skip


class ImapCheckConfig(Model):
    type: Literal["imap"]
    name: str | None = None
    every: Duration = timedelta(seconds=60)
    timeout: Duration = timedelta(seconds=15)
    imap: ImapConfig

    @model_validator(mode="after")
    def _timeout_fits(self) -> ImapCheckConfig:
        if self.timeout >= self.every:
            raise ValueError("timeout must be shorter than every")
        return self


class ImapSession:
    """One blocking IMAP conversation, run in a worker thread; ``stage`` names the step in progress."""

    def __init__(self, settings: ImapProbeSettings, context: ssl.SSLContext, timeout_s: float) -> None:
        self.stage = "start"
        self.settings = settings
        self.certificate: Verdict | None = None
        self._context = context
        self._timeout_s = timeout_s
        self._imap: imaplib.IMAP4 | None = None
        #: known as soon as it is connected, before the greeting, so :meth:`wake` can always reach it
        self.sock: socket.socket | None = None

    @property
    def imap(self) -> imaplib.IMAP4:
        assert self._imap is not None, "open() first"
        return self._imap

    def run(self, token: str | None, work: Callable[[ImapSession], T]) -> T:
        """Open, SELECT, ``work``, LOGOUT; any failure as :class:`MailboxError`."""
        try:
            self._open(token)
            result = work(self)
            self.stage = "logout"
            self.imap.logout()
            return result
        except (imaplib.IMAP4.error, OSError) as exc:
            raise MailboxError(*failure_verdict(self.stage, exc, self.settings)) from exc
        finally:
            self._close()

    def command(self, stage: str, typ: str, data: Sequence[object]) -> Sequence[object]:
        """The data of an OK reply; a NO as :class:`MailboxError` naming ``stage``."""
        if typ != "OK":
            raise MailboxError(CheckStatus.DOWN, f"{stage}: {typ} {_text(data)}")
        return data

    def wake(self) -> None:
        """Shut the socket down, from the loop's thread: a read blocked in the worker ends at once."""
        sock = self._imap.sock if self._imap is not None else self.sock
        if sock is not None:
            # already closed by LOGOUT or by the server: then there is nothing left to wake
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _close(self) -> None:
        """In the worker: close imaplib's reader too, or the socket outlives its close()."""
        if self._imap is not None:
            with contextlib.suppress(OSError):
                self._imap.file.close()
            self._imap.sock.close()
        if self.sock is not None:
            self.sock.close()

    def _open(self, token: str | None) -> None:
        settings = self.settings
        self.stage = "connect"
        if settings.security == "tls":
            self._imap = _Imap4Tls(self, settings.host, settings.port, self._context, self._timeout_s)
        else:
            self._imap = _Imap4(self, settings.host, settings.port, timeout=self._timeout_s)
        if settings.security == "starttls":
            self.stage = "starttls"
            self._imap.starttls(self._context)
        if settings.security != "none":
            peer_cert = self._imap.sock.getpeercert()  # type: ignore[attr-defined]
            self.certificate = certificate_verdict(peer_cert, datetime.now(UTC), settings.cert_warn_days)
        self.stage = "auth"
        self._authenticate(self._imap, token)
        self.stage = "select"
        self.command("select", *self._imap.select(_quoted(settings.mailbox)))

    def _authenticate(self, imap: imaplib.IMAP4, token: str | None) -> None:
        if token is None:
            imap.login(self.settings.username, self.settings.password or "")
            return
        initial = xoauth2(self.settings.username, token)
        answers = iter([initial])
        # a refused token gets a continuation carrying a JSON error; the empty answer to it makes
        # the server send its tagged NO (https://developers.google.com/gmail/imap/xoauth2-protocol)
        imap.authenticate("XOAUTH2", lambda _challenge: next(answers, b""))


class _Imap4(imaplib.IMAP4):
    """imaplib reads the greeting inside its constructor; this hands the socket over before that."""

    def __init__(self, session: ImapSession, host: str, port: int, *, timeout: float) -> None:
        self._session = session
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        self._session.sock = super()._create_socket(timeout)  # type: ignore[misc]
        return self._session.sock


class _Imap4Tls(imaplib.IMAP4_SSL):
    def __init__(
        self, session: ImapSession, host: str, port: int, context: ssl.SSLContext, timeout: float
    ) -> None:
        self._session = session
        super().__init__(host, port, ssl_context=context, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        self._session.sock = super()._create_socket(timeout)  # type: ignore[misc]
        return self._session.sock


class ImapCheck:
    """Log in to one mailbox the way the round trip will read it, and leave."""

    def __init__(
        self,
        name: str,
        settings: ImapProbeSettings,
        *,
        timeout_s: float,
        token_source: TokenSource | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_s <= 0:
            raise ImapCheckConfigError(f"check {name}: timeout must be positive, got {timeout_s}")
        self.name = name
        self.mailbox = Mailbox(settings, timeout_s=timeout_s, token_source=token_source)
        self._clock = clock
        self._monotonic = monotonic

    async def run(self) -> CheckResult:
        started = self._monotonic()
        try:
            status, reason = await self.mailbox.session(_logged_in)
        except MailboxError as exc:
            status, reason = exc.status, exc.reason
        reason = self.mailbox.redact(reason)
        return CheckResult(self.name, status, reason, self._monotonic() - started, self._clock())

    async def aclose(self) -> None:
        await self.mailbox.aclose()


class Mailbox:
    """Runs :class:`ImapSession` s for a check: token first, then the thread, within the timeout."""

    def __init__(
        self, settings: ImapProbeSettings, *, timeout_s: float, token_source: TokenSource | None
    ) -> None:
        if not settings.host:
            raise ImapCheckConfigError("imap: no host")
        # the CA and verification rules are the email channel's, so read them the same way
        try:
            self._context = tls_context(
                SmtpSettings(settings.host, verify_tls=settings.verify_tls, ca_file=settings.ca_file)
            )
        except ChannelConfigError as exc:
            raise ImapCheckConfigError(str(exc)) from exc
        self.settings = settings
        self.timeout_s = timeout_s
        self._tokens = token_source

    async def session(self, work: Callable[[ImapSession], T], *, timeout_s: float | None = None) -> T:
        """``work`` inside one session, within ``timeout_s`` (the check's by default).

        Every failure is a :class:`MailboxError`; a token the server refused leaves the cache.
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        session = ImapSession(self.settings, self._context, timeout_s)
        try:
            async with asyncio.timeout(timeout_s):
                token = None if self._tokens is None else await self._tokens.token()
                return await asyncio.to_thread(session.run, token, work)
        except TimeoutError:
            session.wake()
            raise MailboxError(
                CheckStatus.DOWN, f"timed out after {timeout_s:g}s at stage {session.stage}"
            ) from None
        except OAuthError as exc:
            raise MailboxError(exc.status, f"auth: {exc.reason}") from exc
        except MailboxError as exc:
            if exc.status is CheckStatus.CREDENTIALS and self._tokens is not None:
                self._tokens.invalidate()
            raise

    def redact(self, reason: str) -> str:
        for secret in (self.settings.password, self._tokens.secret if self._tokens else None):
            reason = reason.replace(secret, "***") if secret else reason
        return reason

    async def aclose(self) -> None:
        if self._tokens is not None:
            await self._tokens.aclose()


def _logged_in(session: ImapSession) -> Verdict:
    return session.certificate or (CheckStatus.OK, f"ok: logged in, {session.settings.mailbox} selected")


def failure_verdict(stage: str, exc: BaseException, settings: ImapProbeSettings) -> Verdict:
    where = f"{settings.host}:{settings.port}"
    if isinstance(exc, socket.gaierror):
        return CheckStatus.UNKNOWN, f"{stage}: cannot resolve {settings.host} ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return CheckStatus.DOWN, f"{stage}: connection refused by {where}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CheckStatus.DOWN, f"{stage}: TLS certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return CheckStatus.DOWN, f"{stage}: TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return CheckStatus.DOWN, f"{stage}: no answer from {where} within the socket timeout"
    if isinstance(exc, imaplib.IMAP4.abort):
        return CheckStatus.DOWN, f"{stage}: {_one_line(str(exc))}"
    if isinstance(exc, imaplib.IMAP4.error):
        return reply_verdict(stage, _message(exc))
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return CheckStatus.DOWN, f"{stage}: {_one_line(detail or type(exc).__name__)}"


def reply_verdict(stage: str, message: str) -> Verdict:
    """imaplib raises NO and BAD replies as IMAP4.error; a BAD names itself as a command error."""
    reply = f"{stage}: {_one_line(message)}"
    code = _CODE.search(message)
    bad = "command error: BAD" in message
    if stage == "auth" and not bad and (code is None or code.group(1) not in _SERVER_CODES):
        return CheckStatus.CREDENTIALS, f"{reply} (authentication failed: credentials need renewing)"
    return CheckStatus.DOWN, reply


def _message(exc: imaplib.IMAP4.error) -> str:
    """imaplib raises a NO with the server's bytes as the argument, other errors with text."""
    arg = exc.args[0] if exc.args else ""
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def _text(data: Sequence[object]) -> str:
    parts = [d.decode("utf-8", "replace") if isinstance(d, bytes) else str(d) for d in data if d]
    return _one_line(" ".join(parts))


def _quoted(mailbox: str) -> str:
    """imaplib sends arguments as they are; a mailbox name with a space must be a quoted string."""
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _REPLY_MAX else line[: _REPLY_MAX - 1] + "…"
