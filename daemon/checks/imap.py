"""The IMAP provider check: connect, TLS, LOGIN or XOAUTH2, SELECT the mailbox, LOGOUT.

Why imaplib in a thread and not an asyncio IMAP client: imaplib is the standard library, speaks
STARTTLS, implicit TLS and any SASL mechanism (XOAUTH2 is a callback; PLAIN carries a username or
password outside ASCII, which LOGIN's strings cannot), and its failures are well
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
the name does not resolve, or resolving times out        UNKNOWN
no route to the network at all                           UNKNOWN
the OAuth2 token endpoint refuses the client             CREDENTIALS
the OAuth2 token endpoint cannot be asked                UNKNOWN
=======================================================  ===========

The session itself is :mod:`daemon.checks._imap_session` and how its failures read is
:mod:`daemon.checks._imap_verdicts`. :class:`ImapSession` is shared with the round-trip check,
which searches and deletes its canaries in the same kind of session; it, :class:`MailboxError`,
:class:`ImapProbeSettings` and ``Security`` are imported back here for the check's users.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from pydantic import Field, model_validator

from channels.base import ChannelConfigError
from channels.email import SmtpSettings, tls_context
from daemon.checks._imap_session import ImapProbeSettings, ImapSession, MailboxError, Security
from daemon.checks._mail import Verdict
from daemon.checks._smtp_verdicts import timeout_verdict
from daemon.checks.oauth import OAuthError, TokenSource
from daemon.configbase import Duration, Model, OAuth2Config, Secret
from daemon.core.model import CheckResult, CheckStatus

T = TypeVar("T")

__all__ = [
    "ImapCheck",
    "ImapCheckConfig",
    "ImapCheckConfigError",
    "ImapConfig",
    "ImapProbeSettings",
    "ImapSession",
    "Mailbox",
    "MailboxError",
    "Security",
]


class ImapCheckConfigError(ValueError):
    """The IMAP settings are unusable."""


class ImapConfig(Model):
    """``imap:`` of an imap or roundtrip check."""

    host: str = Field(min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    security: Security = "tls"
    username: str = Field(min_length=1)
    password: Secret | None = None
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
        fetching = self._tokens is not None
        try:
            async with asyncio.timeout(timeout_s):
                token = None if self._tokens is None else await self._tokens.token()
                fetching = False
                return await asyncio.to_thread(session.run, token, work)
        except TimeoutError:
            session.wake()
            if fetching:  # the identity provider (or our way to it), as when it cannot be reached
                endpoint = "the OAuth2 token endpoint is not answering"
                reason = f"timed out after {timeout_s:g}s at stage token ({endpoint})"
                raise MailboxError(CheckStatus.UNKNOWN, reason) from None
            raise MailboxError(*timeout_verdict(session.stage, timeout_s)) from None  # read as SMTP's
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
