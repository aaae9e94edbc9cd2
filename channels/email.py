"""The email channel: one SMTP submission per send, with aiosmtplib (async, no thread needed).

A connection per send keeps the adapter stateless: nothing to reconnect after a provider
outage, and the dispatcher's concurrency cap bounds the connections. The Message-ID is
``<notification_id@backchannel>`` on every attempt, so a repeat after a lost reply is the same
message to the recipient's client.

Reply codes map to outcomes as :mod:`channels.email_replies` draws them (RFC 5321, RFC 4954); the
message and its envelope's options are :mod:`channels.email_message`'s.

Recipients refused for now (4xx) while others were accepted are sent the message again at once
in a new transaction on the same session, and again while each new transaction takes some: the
remedy RFC 5321 §4.5.3.1.10 gives for ``452 Too many recipients``
(https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1.10), which Exchange Online answers past
its recipients per message. Those still refused are in ``Receipt.refused``: for a message relayed
from the smart host the dispatcher retries them later in a follow-up (:mod:`daemon.refusals`)
without sending the others the message again, and so for a notification of ours (it counts as
delivered: its other recipients have it, and its detail names those refused). A refusal of this
message by the server (at MAIL, RCPT or DATA) names each recipient's reply in
``ChannelError.refused``, so the sender of a relayed message can be told (RFC 3464).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiosmtplib

from channels.base import ChannelConfigError, ChannelError, OutboundMessage, Receipt, Refusal
from channels.email_message import mail_options, render, within_ascii
from channels.email_replies import (
    all_refused,
    content_error,
    describe,
    detail_of,
    each_refused,
    our_network,
    recipients_error,
    refusals_of,
    refused_here,
    response_error,
)


@dataclass(frozen=True)
class SmtpSettings:
    """How to reach and log in to one SMTP server: the email channel's, and the SMTP check's.

    The check (``daemon.checks.smtp``) bounds a whole run with its own timeout and holds its own
    token source (to drop a refused token and redact it), so it reads neither ``timeout_s`` nor ``token``.
    """

    host: str
    port: int = 587
    #: require STARTTLS (submission, RFC 6409); ignored when ``tls`` (implicit TLS, RFC 8314) is set
    starttls: bool = True
    tls: bool = False
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0
    verify_tls: bool = True
    ca_file: str | None = None
    helo: str | None = None
    #: SASL XOAUTH2 instead of a password: returns a current access token for ``username``; raises
    #: ChannelError when none can be had (https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth)
    token: Callable[[], Awaitable[str]] | None = None


class EmailChannel:
    """Submit each message to one SMTP server."""

    #: a message from the SMTP smart host goes out as its own bytes (``channels.base.RelaysMail``)
    relays_mail = True

    def __init__(
        self, name: str, smtp: SmtpSettings, *, mail_from: str, default_to: Sequence[str] = ()
    ) -> None:
        self.name = name
        self._smtp = smtp
        self._mail_from = mail_from
        self._default_to = tuple(default_to)
        self._tls_context = tls_context(smtp)

    async def send(self, message: OutboundMessage) -> Receipt:
        recipients = message.recipients or self._default_to
        if not recipients:
            raise ChannelError(f"{self.name}: no recipients for email", permanent=True)
        # "" is the null sender (<>) of a bounce or a receipt relayed from the smart host: kept as
        # it came, never replaced by ours (that would invite bounce loops)
        sender = self._mail_from if message.mail_from is None else message.mail_from
        try:
            content = message.raw if message.raw is not None else render(message, self._mail_from, recipients)
            refused, reply = await self._submit(sender, recipients, content, relayed=message.raw is not None)
        except aiosmtplib.SMTPDataError as exc:
            raise content_error(exc.code, exc.message, all_refused(recipients, exc)) from exc
        except aiosmtplib.SMTPSenderRefused as exc:
            refused = all_refused(recipients, exc)
            if message.raw is not None and 500 <= exc.code < 600:
                # a relayed message's sender or size refused: the server judged this message
                raise content_error(exc.code, exc.message, refused) from exc
            raise response_error(exc.code, exc.message, refused) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise response_error(exc.code, exc.message) from exc
        except aiosmtplib.SMTPNotSupported as exc:
            # the server works but cannot take this message (an address not in ASCII without SMTPUTF8)
            raise ChannelError(
                f"SMTP {self._where} cannot take this message: {exc}",
                permanent=True,
                refused=refused_here(recipients, self._no_smtputf8),
            ) from exc
        except ValueError as exc:
            # aiosmtplib and email.message refuse addresses and headers that would break the protocol
            why = f"5.0.0 the message cannot be sent: {exc}"
            raise ChannelError(
                f"message cannot be sent: {exc}", permanent=True, refused=refused_here(recipients, why)
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            reason = f"SMTP {self._where}: {describe(exc)}"
            raise ChannelError(reason, service_fault=True, local=our_network(exc)) from exc
        return Receipt(channel=self.name, detail=detail_of(reply, refused), refused=refused)

    async def aclose(self) -> None:
        """Nothing is held between sends."""

    @property
    def _where(self) -> str:
        return f"{self._smtp.host}:{self._smtp.port}"

    @property
    def _no_smtputf8(self) -> str:
        return f"5.6.7 SMTPUTF8 is required, but was not offered by {self._where}"  # RFC 6531 §3.5

    async def _submit(
        self, sender: str, recipients: Sequence[str], content: bytes, *, relayed: bool
    ) -> tuple[tuple[Refusal, ...], str]:
        """One SMTP session (aiosmtplib's client: its ``send()`` refuses the null sender).

        An address beyond ASCII that a server without SMTPUTF8 cannot take is refused here, and
        the message goes to the others; ChannelError when every recipient is refused."""
        smtp = self._smtp
        client = aiosmtplib.SMTP(
            hostname=smtp.host, port=smtp.port, use_tls=smtp.tls, start_tls=smtp.starttls and not smtp.tls,
            tls_context=self._tls_context, timeout=smtp.timeout_s, local_hostname=smtp.helo,
            username=None if smtp.token is not None else smtp.username, password=smtp.password,
        )  # fmt: skip
        async with client:
            if smtp.token is not None:
                await client.auth_xoauth2(smtp.username or "", await smtp.token())
            if client.is_ehlo_or_helo_needed:
                with contextlib.suppress(aiosmtplib.SMTPHeloError):  # sendmail falls back to HELO
                    await client.ehlo()
            sendable, beyond = within_ascii(sender, recipients, client.supports_extension("smtputf8"))
            found = refused_here(beyond, self._no_smtputf8)
            options = mail_options(sender, sendable, content, client.supports_extension)
            try:
                refused, reply = await client.sendmail(sender, sendable, content, mail_options=options)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                raise recipients_error(found + each_refused(exc.recipients), relayed=relayed) from exc
            return found + await _again(client, sender, content, refusals_of(refused)), reply


async def _again(
    client: aiosmtplib.SMTP, sender: str, content: bytes, refusals: tuple[Refusal, ...]
) -> tuple[Refusal, ...]:
    """The recipients refused for now, sent the message in new transactions while each takes some.

    Every such transaction reaches at least one more recipient (or ends the loop), so there are at
    most as many as recipients. One that takes none (greylisting, a full mailbox) or fails leaves
    them refused for now: the message has reached the others, so the send is still delivered.
    """
    while later := [r.recipient for r in refusals if not r.permanent]:
        settled = tuple(r for r in refusals if r.permanent)
        options = mail_options(sender, later, content, client.supports_extension)
        try:
            refused, _ = await client.sendmail(sender, later, content, mail_options=options)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return settled + each_refused(exc.recipients)
        except (aiosmtplib.SMTPDataError, aiosmtplib.SMTPSenderRefused) as exc:
            return settled + all_refused(later, exc)
        except (aiosmtplib.SMTPException, OSError):  # the session broke: left as they were
            return refusals
        refusals = settled + refusals_of(refused)
    return refusals


def tls_context(smtp: SmtpSettings) -> ssl.SSLContext:
    """The context that verifies ``smtp``'s server (or not, with ``verify_tls`` off)."""
    try:
        context = ssl.create_default_context(cafile=smtp.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ChannelConfigError(f"cannot load CA file {smtp.ca_file}: {exc}") from exc
    if not smtp.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
