"""What the email channel submits: the envelope's options and the recipients a server can take,
and the RFC 5322 message it writes for a notification (a relayed message goes as its own bytes).
"""

from __future__ import annotations

import email.policy
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from email.utils import format_datetime

from channels.base import OutboundMessage


def within_ascii(sender: str, recipients: Sequence[str], smtputf8: bool) -> tuple[list[str], list[str]]:
    """The recipients a server can take, and those it cannot: without SMTPUTF8, an address beyond
    ASCII (RFC 6531 §3.5), unless every address needs it (the send then fails as a whole)."""
    ascii_only = [r for r in recipients if r.isascii()]
    if smtputf8 or not sender.isascii() or not ascii_only:
        return list(recipients), []
    return ascii_only, [r for r in recipients if not r.isascii()]


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


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())
