"""The email channel: one SMTP submission per send, with aiosmtplib (async, no thread needed).

A connection per send keeps the adapter stateless: nothing to reconnect after a provider
outage, and the dispatcher's concurrency cap bounds the connections. The Message-ID is
``<notification_id@backchannel>`` on every attempt, so a repeat after a lost reply is the same
message to the recipient's client.

Reply codes map to outcomes per RFC 5321 §4.2.1 (https://www.rfc-editor.org/rfc/rfc5321#section-4.2.1)
and RFC 4954 §6 for AUTH (https://www.rfc-editor.org/rfc/rfc4954#section-6):

====================================================  =========  =============
what happened                                         permanent  service_fault
====================================================  =========  =============
refused, timeout, connection lost, TLS failure         no         yes
any other 4xx (421 included)                          no         yes
4xx to every recipient, each about the mail (below)   no         no
530 / 534 / 535: authentication failed                no         yes
5xx to the greeting, HELO or MAIL FROM                yes        yes
5xx to DATA or at its end (this message)              yes        no
5xx to every recipient                                yes        no
some recipients refused, at least one accepted        delivered (Receipt.refused names them)
an address beyond ASCII without SMTPUTF8, others not  delivered (refused here, 5.6.7, RFC 6531 §3.5)
====================================================  =========  =============

A 4xx to a recipient whose enhanced status code (RFC 3463) is about the mail, not the server
(x.1.x an address, x.2.x the mailbox: full, busy, disabled for now; 4.5.3 too many recipients),
says nothing of the provider's health: a full mailbox retried all day must not push the provider
toward an outage. It is ``ChannelError.later``: it keeps trying for days, as mail servers do,
unless the plan fails over from it to another channel (after its attempts, as usual). A 4xx without an
enhanced code, or of another class (4.3.x the mail system, 4.4.x routing, 4.7.x policy and
throttling such as Exchange Online's ``451 4.7.500 Server busy``), may be the provider's and counts.

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
import email.policy
import errno
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib

from channels.base import FOUND_HERE, ChannelConfigError, ChannelError, OutboundMessage, Receipt, Refusal

_AUTH_CODES = frozenset({530, 534, 535})


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


#: errnos that mean no packet left this host: our network, not the provider (the SMTP check reads
#: them so too)
LOCAL_ERRNOS = frozenset({errno.ENETUNREACH, errno.ENETDOWN})


def _our_network(exc: BaseException) -> bool:
    """Whether a failure to reach the server is our own: its name did not resolve (our resolver
    may be the one failing) or no route left this host. The SMTP check reads these as UNKNOWN;
    fed to health tracking as the provider's fault, a few such sends declared an outage of a
    provider that was up. They stay service faults for the delivery: kept queued until it works.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror) or (isinstance(seen, OSError) and seen.errno in LOCAL_ERRNOS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
            raise _content_error(exc.code, exc.message, _all(recipients, exc)) from exc
        except aiosmtplib.SMTPSenderRefused as exc:
            refused = _all(recipients, exc)
            if message.raw is not None and 500 <= exc.code < 600:
                # a relayed message's sender or size refused: the server judged this message
                raise _content_error(exc.code, exc.message, refused) from exc
            raise _response_error(exc.code, exc.message, refused) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _response_error(exc.code, exc.message) from exc
        except aiosmtplib.SMTPNotSupported as exc:
            # the server works but cannot take this message (an address not in ASCII without SMTPUTF8)
            raise ChannelError(
                f"SMTP {self._where} cannot take this message: {exc}",
                permanent=True,
                refused=_found_here(recipients, self._no_smtputf8),
            ) from exc
        except ValueError as exc:
            # aiosmtplib and email.message refuse addresses and headers that would break the protocol
            why = f"5.0.0 the message cannot be sent: {exc}"
            raise ChannelError(
                f"message cannot be sent: {exc}", permanent=True, refused=_found_here(recipients, why)
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            reason = f"SMTP {self._where}: {_describe(exc)}"
            raise ChannelError(reason, service_fault=True, local=_our_network(exc)) from exc
        return Receipt(channel=self.name, detail=_detail(reply, refused), refused=refused)

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
            sendable, beyond = _within_ascii(sender, recipients, client.supports_extension("smtputf8"))
            found = _found_here(beyond, self._no_smtputf8)
            options = mail_options(sender, sendable, content, client.supports_extension)
            try:
                refused, reply = await client.sendmail(sender, sendable, content, mail_options=options)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                raise _recipients_error(found + _each(exc.recipients), relayed=relayed) from exc
            return found + await _again(client, sender, content, _refusals(refused)), reply


def _within_ascii(sender: str, recipients: Sequence[str], smtputf8: bool) -> tuple[list[str], list[str]]:
    """The recipients a server can take, and those it cannot: without SMTPUTF8, an address beyond
    ASCII (RFC 6531 §3.5), unless every address needs it (the send then fails as a whole)."""
    ascii_only = [r for r in recipients if r.isascii()]
    if smtputf8 or not sender.isascii() or not ascii_only:
        return list(recipients), []
    return ascii_only, [r for r in recipients if not r.isascii()]


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
            return settled + _each(exc.recipients)
        except (aiosmtplib.SMTPDataError, aiosmtplib.SMTPSenderRefused) as exc:
            return settled + _all(later, exc)
        except (aiosmtplib.SMTPException, OSError):  # the session broke: left as they were
            return refusals
        refusals = settled + _refusals(refused)
    return refusals


def _each(refusals: Sequence[aiosmtplib.SMTPRecipientRefused]) -> tuple[Refusal, ...]:
    return tuple(Refusal(r.recipient, r.code, r.message) for r in refusals)


def _refusals(refused: dict[str, aiosmtplib.SMTPResponse]) -> tuple[Refusal, ...]:
    return tuple(Refusal(addr, r.code, r.message) for addr, r in refused.items())


def _found_here(recipients: Sequence[str], why: str) -> tuple[Refusal, ...]:
    """A failure for good found before any server replied, as each recipient's (its sender can be
    told: RFC 5321 §6.1 holds whoever found it)."""
    return tuple(Refusal(r, 554, why, diagnostic=FOUND_HERE) for r in recipients)


def _all(recipients: Sequence[str], exc: aiosmtplib.SMTPResponseException) -> tuple[Refusal, ...]:
    """A reply that refused the whole message (to MAIL FROM or DATA), as each recipient's."""
    return tuple(Refusal(r, exc.code, exc.message) for r in recipients)


def mail_options(
    sender: str, recipients: Sequence[str], content: bytes = b"", offered: Callable[[str], bool] = bool
) -> list[str]:
    """``SMTPUTF8`` (RFC 6531) when an address of the envelope is not ASCII: without it such an
    address cannot be sent at all. When the server ``offered`` them, also as a client that sent
    the message would have declared it: ``SMTPUTF8`` for a header that is not ASCII (RFC 6532),
    ``BODY=8BITMIME`` for 8-bit bytes (RFC 6152). The bytes go as they came either way."""
    envelope_utf8 = not (sender.isascii() and all(r.isascii() for r in recipients))
    header_utf8 = not _header(content).isascii() and offered("smtputf8")
    options = ["SMTPUTF8"] if envelope_utf8 or header_utf8 else []
    if not content.isascii() and offered("8bitmime"):
        options.append("BODY=8BITMIME")
    return options


def _header(content: bytes) -> bytes:
    """The header section (up to the first empty line, with CRLF or bare LF line ends)."""
    ends = [i for i in (content.find(b"\r\n\r\n"), content.find(b"\n\n")) if i >= 0]
    return content[: min(ends)] if ends else content


def render(message: OutboundMessage, mail_from: str, recipients: Sequence[str]) -> bytes:
    """The RFC 5322 message for ``message``, CRLF line endings, ready for DATA."""
    mail = EmailMessage(policy=email.policy.SMTP)
    drill = "[DRILL] " if message.drill else ""
    mail["Subject"] = f"{drill}[{message.severity.upper()}] {_one_line(message.subject)}"
    mail["From"] = mail_from
    mail["To"] = ", ".join(recipients)
    mail["Date"] = format_datetime(message.created_at)
    mail["Message-ID"] = f"<{message.notification_id}@backchannel>"
    mail["X-Backchannel-Id"] = message.notification_id
    mail["X-Backchannel-Severity"] = message.severity
    # RFC 3834 §5: tells autoresponders (vacation replies) not to answer.
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(_text(message), charset="utf-8")
    return mail.as_bytes()


def _text(message: OutboundMessage) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(message.labels.items())) or "-"
    lines = [
        message.body,
        "",
        "-- ",
        f"Notification: {message.notification_id}",
        f"Severity: {message.severity}",
        f"Source: {message.source}",
        f"Created: {message.created_at.isoformat()}",
        f"Labels: {labels}",
    ]
    if message.drill:
        lines.append("This is a drill.")
    return "\n".join(lines) + "\n"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


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


def _response_error(code: int, text: str, refused: tuple[Refusal, ...] = ()) -> ChannelError:
    reply = f"{code} {text}"
    if code in _AUTH_CODES:
        return ChannelError(
            f"SMTP authentication failed (credentials need renewing): {reply}", service_fault=True
        )
    permanent = 500 <= code < 600
    return ChannelError(
        f"SMTP server answered {reply}", permanent=permanent, service_fault=True, refused=refused
    )


def _content_error(code: int, text: str, refused: tuple[Refusal, ...]) -> ChannelError:
    """A refusal at the end of DATA: the server took the session and judged this message (its
    size, a line too long, its content, a spam filter). A 5xx there says nothing of the provider's
    health, so one bad message cannot push it toward an outage; a 4xx there still may."""
    if 500 <= code < 600:
        return ChannelError(
            f"SMTP server refused the message: {code} {text}", permanent=True, refused=refused
        )
    return _response_error(code, text, refused)


def _recipients_error(refused: tuple[Refusal, ...], *, relayed: bool) -> ChannelError:
    """Every recipient refused. Some for good and some for now, in a relayed message: it fails
    for good, so its sender hears of the first at once and a follow-up retries the others alone
    (:mod:`daemon.refusals`); retried whole, the report would wait for the retries to run out."""
    replies = "; ".join(f"{r.recipient}: {r.reply}" for r in refused)
    transient = [r for r in refused if not r.permanent]
    if relayed and transient and len(transient) < len(refused):
        fault = not all(r.about_this_mail for r in transient)
        return ChannelError(
            f"recipients refused, some for now: {replies}",
            permanent=True,
            service_fault=fault,
            refused=refused,
        )
    if transient and all(r.about_this_mail for r in transient):
        # a full or busy mailbox, too many recipients: kept trying, but the provider is working
        return ChannelError(f"recipients refused for now: {replies}", refused=refused, later=True)
    if transient:
        return _response_error(transient[0].code, f"recipients refused ({replies})", refused)
    return ChannelError(f"all recipients refused: {replies}", permanent=True, refused=refused)


def _detail(reply: str, refused: tuple[Refusal, ...]) -> str:
    # aiosmtplib hands back the text of the reply to the end of DATA, which is 250 when it returns.
    final = f"250 {reply}"
    if not refused:
        return final
    names = ", ".join(f"{r.recipient} ({r.code} {r.text})" for r in refused)
    return f"{final}; refused: {names}"
