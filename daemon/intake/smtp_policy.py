"""What the SMTP smart host lets through, and what a message becomes: aiosmtpd's handler.

aiosmtpd calls a handler's ``handle_<VERB>`` hooks (https://aiosmtpd.aio-libs.org/en/latest/handlers.html)
for each session of :class:`~daemon.intake.smtp.SmtpIntake`. Here: MAIL needs an authenticated
client or one from an allowed network (never on the submission listener), then a store not known
to fail (:data:`STORE_UNAVAILABLE`), RCPT only to allowed domains, DATA commits the message through
the :class:`~daemon.intake.accept.Acceptor` before it answers 250 (451 with nothing kept when the
store cannot), and :meth:`SmtpPolicy.submission` turns the message into a notification: severity
from the classifier's rules, the text rendered from the MIME parts, labels from the envelope and
the configured headers, an idempotency key from the Message-ID and the envelope.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiosmtpd.smtp import Envelope, Session

from daemon.intake import mailtext
from daemon.intake.accept import Acceptor, Submission
from daemon.intake.smtp_auth import Credentials, Networks, RecipientDomains
from daemon.intake.smtp_config import Classifier, MessageFacts, SmtpIntakeConfig
from daemon.store.base import StoreUnavailable

if TYPE_CHECKING:
    from daemon.intake.smtp_session import _Session

log = logging.getLogger("daemon.intake.smtp")  # the smart host logs under one name


def peer_of(session: Session | None) -> str:
    peer = None if session is None else session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


#: a reverse-path's mailbox (RFC 5321 section 4.1.2) as aiosmtpd hands it over: a dot-atom or
#: quoted local part, "@", a domain or address literal; UTF-8 allowed (SMTPUTF8). A bare dot-atom
#: ("root", from cron on a host without a mail name) passes, as Postfix takes it; a bare quoted
#: one is what aiosmtpd makes of words with spaces ("bad address"), refused. The null sender is
#: checked apart.
_DOMAIN = r"@(?:\[[^\s\]]+\]|[^\s\"@<>()\[\],;:\\]+)"
_MAILBOX = re.compile(rf'"(?:[^"\\\r\n]|\\.)*"{_DOMAIN}|[^\s"@<>()\[\],;:\\]+(?:{_DOMAIN})?')
#: MAIL FROM while the store's health says it cannot commit, before the client sends its message
#: (Postfix answers ``452 4.3.1 Insufficient system storage`` when its queue is short of space).
#: 451 4.3.0, not 452 4.3.1: the cause is as often not storage (a read-only or failing disk,
#: PostgreSQL unreachable), and it is the code DATA answers when a commit fails, one cause one code;
#: either is transient, and a client queues the message and retries (RFC 5321 section 4.2.1). The
#: words are fixed: the store's own error (a path, a database address) stays in the log.
STORE_UNAVAILABLE = "451 4.3.0 Store unavailable, try again later"
#: RFC 5321 section 4.5.3.1.6 caps lines at 1000 octets and aiosmtpd enforces it (500), but HTML
#: generators send longer ones, which providers and Postfix accept: a smart host that refused them
#: would break senders that work today
LINE_MAX = 64 * 1024
LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"  # aiosmtpd's own words
#: a dot at the start of a line after a bare LF (one not after CR)
_DOT_AFTER_BARE_LF = re.compile(rb"(?<!\r)\n\.")
#: the text of a message that could not be rendered (a bug, logged): it is kept and relayed as it came
UNREADABLE = "(This message could not be shown as text. The email channel relays it unchanged.)"


class SmtpPolicy:
    """aiosmtpd's handler: who may send, to whom, and what a message becomes."""

    def __init__(self, config: SmtpIntakeConfig, acceptor: Acceptor) -> None:
        self._acceptor = acceptor
        self.adopt(config)

    def adopt(self, config: SmtpIntakeConfig) -> None:
        """Users, networks, domains, rules and labels from ``config``, for every session from its
        next command on (a reload: a user removed cannot log in again on an open session either)."""
        self._config = config
        self.credentials = Credentials(config.user_hashes())
        self.networks = Networks(config.allowed_networks)
        self._domains = RecipientDomains(config.recipient_domains)
        self._classifier = Classifier(config.rules, config.default_severity)

    async def handle_EHLO(
        self, server: _Session, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # the hook takes over this bit of aiosmtpd's own EHLO
        if not self.credentials:
            return [r for r in responses if not r[4:].startswith("AUTH")]
        return responses

    async def handle_MAIL(
        self, server: _Session, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        trusted = not server.listener.auth_required and peer_of(session) in self.networks
        # a user a reload removed sends no more on a session that logged in before it
        authenticated = session.authenticated and session.auth_data in self.credentials
        if not (authenticated or trusted):
            return "530 5.7.0 Authentication required"
        if address not in ("", "<>") and not _MAILBOX.fullmatch(address):
            return "501 5.1.7 Bad sender address syntax"
        if not _utf8(address):
            return "553 5.1.7 The sender address is not UTF-8"
        if await self._acceptor.store_failing() is not None:
            fields = {"event": "smtp.store_unavailable", "command": "MAIL", "peer": peer_of(session)}
            log.info("SMTP MAIL FROM deferred: the store cannot commit", extra=fields)
            return STORE_UNAVAILABLE
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: _Session, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not _utf8(address):
            return "553 5.1.3 The recipient address is not UTF-8"
        if not self._domains.allows(address):
            return "550 5.7.1 Relaying denied"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: _Session, session: Session, envelope: Envelope) -> str:
        server.committing = True
        try:
            return await self._commit(server, session, envelope)
        finally:
            server.committing = False

    async def _commit(self, server: _Session, session: Session, envelope: Envelope) -> str:
        started = time.monotonic()
        content = await asyncio.to_thread(lines_at_lf, envelope.original_content or b"")
        if content is None:
            return LINE_TOO_LONG
        envelope.original_content = content
        login = session.auth_data if isinstance(session.auth_data, str) else None
        # parsing and rendering a large MIME message is CPU work: keep it off the loop
        submission = await asyncio.to_thread(self.submission, envelope, login, server.listener.name)
        try:
            (accepted,) = await self._acceptor.accept([submission])
        except StoreUnavailable as exc:
            log.error("SMTP message refused: %s", exc, extra={"event": "smtp.store_unavailable"})
            return "451 4.3.0 Cannot queue the message now, try again later"
        log.info(
            "SMTP message accepted as %s",
            accepted.id,
            extra={
                "event": "smtp.accepted",
                "notification_id": accepted.id,
                "duplicate": accepted.duplicate,
                "severity": submission.severity.value,
                "peer": peer_of(session),
                "latency_s": round(time.monotonic() - started, 4),
            },
        )
        return f"250 2.0.0 OK: queued as {accepted.id}"

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %r", error, exc_info=error, extra={"event": "smtp.error"})
        return "451 4.3.0 Local error, try again later"

    def submission(self, envelope: Envelope, login: str | None, listener: str) -> Submission:
        """What the message becomes (blocking: parses the MIME structure)."""
        raw: bytes = envelope.original_content or b""
        reading = _read(raw, self._config.body_max_chars)
        values = reading.headers
        sender = "" if envelope.mail_from in (None, "<>") else str(envelope.mail_from)
        recipients = tuple(str(a) for a in envelope.rcpt_tos)
        facts = MessageFacts(sender, recipients, reading.subject, mailtext.importance(values), values)
        severity, rule = self._classifier.classify(facts)
        labels = {
            "smtp_from": sender.lower(),
            "smtp_to": ",".join(a.lower() for a in recipients),
            "importance": facts.importance,
            "smtp_listener": listener,
        }
        extra = {"smtp_user": login, "smtp_rule": rule, "message_id": values.get("message-id")}
        labels.update({k: v for k, v in extra.items() if v})
        labels.update(header_labels(values, self._config.label_headers))
        return Submission(
            severity=severity,
            subject=reading.subject,
            body=reading.body,
            source=self._config.source,
            recipients=recipients,
            labels=labels,
            idempotency_key=idempotency_key(values.get("message-id"), sender, recipients, raw),
            mail_from=sender,  # "" for the null sender: relayed as <>, not as the provider's address
            raw=raw,
        )


@dataclass(frozen=True, slots=True)
class _Reading:
    """What the backup channels and the rules see of a message."""

    #: header names lower-cased to their first value, decoded
    headers: dict[str, str]
    subject: str
    body: str


def _read(raw: bytes, max_chars: int) -> _Reading:
    """The message's headers, subject and text; never raises.

    Rendering does not raise on malformed mail by design, but should it (a bug, or input past
    Python's own limits, such as multiparts nested deeper than its recursion allows), the client
    would get 451 and retry the same message for ever: it is kept instead, its headers read alone
    and its text a placeholder (the email channel relays the message as it came), and the bug logged.
    """
    try:
        message = mailtext.parse(raw)
        return _Reading(
            mailtext.headers(message),
            mailtext.subject(message),
            mailtext.render(message, max_chars=max_chars),
        )
    except Exception as exc:  # anything at all: see the docstring
        log.error(
            "SMTP message could not be rendered; kept with a placeholder text: %r",
            exc,
            exc_info=exc,
            extra={"event": "smtp.unrenderable"},
        )
    try:
        message = mailtext.parse(raw, headers_only=True)
        return _Reading(mailtext.headers(message), mailtext.subject(message), UNREADABLE)
    except Exception:  # logged above; the headers alone failing too leaves the placeholder only
        return _Reading({}, "(no subject)", UNREADABLE)


#: a label carries at most this much of a header's value
HEADER_LABEL_MAX_CHARS = 256


def header_labels(values: dict[str, str], names: list[str]) -> dict[str, str]:
    """``header:<name>`` labels for the configured headers the message has (names lower-cased)."""
    wanted = (name.lower() for name in names)
    return {f"header:{name}": values[name][:HEADER_LABEL_MAX_CHARS] for name in wanted if name in values}


def idempotency_key(
    message_id: str | None, sender: str, recipients: tuple[str, ...], raw: bytes
) -> str | None:
    """The same message retried after a lost 250 maps to the same key; None without a Message-ID.

    The envelope is part of the key: a client that sends one message (one Message-ID) to its
    recipients in several transactions must not have all but the first dropped as repeats. So is
    the message itself: appliances and scripts that reuse a Message-ID for every alert (or make
    one per second) must not have a new alert dropped as the repeat of an old one. A client
    retrying sends the same bytes again.
    """
    if not message_id:
        return None
    envelope = "\0".join([message_id, sender.lower(), *sorted(a.lower() for a in recipients)])
    digest = hashlib.sha256(envelope.encode("utf-8", errors="surrogateescape"))
    digest.update(b"\0" + hashlib.sha256(raw).digest())
    return "smtp:" + digest.hexdigest()


def lines_at_lf(content: bytes) -> bytes | None:
    """``content`` read in lines that LF ends, as Postfix reads a message (aiosmtpd split it at
    CRLF only, :meth:`~daemon.intake.smtp_session._Session.smtp_DATA`): the dot a client doubled at
    the start of a line after a bare LF (RFC 5321 section 4.5.2) taken off, as aiosmtpd took those
    after CRLF; None when a line is longer than LINE_MAX (blocking: scans the whole message)."""
    if max(map(len, content.split(b"\n"))) >= LINE_MAX:  # the LF, not counted, makes it longer
        return None
    if content.count(b"\n") == content.count(b"\r\n"):
        return content
    return _DOT_AFTER_BARE_LF.sub(b"\n", content)


def _utf8(address: str) -> bool:
    """aiosmtpd hands bytes that are not UTF-8 on as surrogates: such an address can be neither
    stored nor relayed (RFC 6531 addresses are UTF-8)."""
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
