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

The conversation itself (resolve and connect apart, so our own network's trouble is told apart
from the provider's) is :mod:`daemon.checks._smtp_conversation`; how its failures read is
:mod:`daemon.checks._smtp_verdicts`. :class:`Conversation` is imported back here for the
round-trip check.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiosmtplib

from channels.base import ChannelConfigError
from channels.email import SmtpSettings, tls_context
from daemon.checks._mail import Verdict
from daemon.checks._smtp_conversation import Conversation, make_client
from daemon.checks._smtp_verdicts import failure_verdict, timeout_verdict
from daemon.checks.oauth import OAuthError, TokenSource
from daemon.core.model import CheckResult

__all__ = ["Conversation", "SmtpCheck", "SmtpCheckConfigError", "redact"]


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
            make_client(settings, settings.helo, None)
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


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    """The channel's context, so the check trusts exactly the certificates the channel trusts."""
    try:
        return tls_context(settings)
    except ChannelConfigError as exc:
        raise SmtpCheckConfigError(str(exc)) from exc


def redact(reason: str, password: str | None, tokens: TokenSource | None = None) -> str:
    """A server may echo what it was sent; no secret ever reaches a log or the store."""
    for secret in (password, tokens.secret if tokens is not None else None):
        reason = reason.replace(secret, "***") if secret else reason
    return reason
