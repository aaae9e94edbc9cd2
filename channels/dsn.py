"""Delivery status notifications: the report a relayed message's sender gets when it failed for good.

RFC 5321 §6.1 (https://www.rfc-editor.org/rfc/rfc5321#section-6.1): a server that said 250 and
then cannot deliver MUST tell the envelope sender, unless that is the null sender (a report of a
report could loop). The report is RFC 6522's ``multipart/report`` with RFC 3464's
``message/delivery-status`` (https://www.rfc-editor.org/rfc/rfc3464), the form every mail
system and mail client understands:

1. ``text/plain``: what happened, for a person: each recipient and the server's reply;
2. ``message/delivery-status``: the same for software, one block per recipient;
3. ``text/rfc822-headers``: the original message's header, exactly as received, not its body
   (RFC 6522 §4: enough to recognise the message, without returning a large attachment).

Pure: the caller passes the times and names in; no I/O. The report goes out with the null sender
(``MAIL FROM:<>``), so one that cannot be delivered never makes another.
"""

from __future__ import annotations

import email.policy
import re
from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage, Message
from email.utils import format_datetime

from channels.base import Refusal

#: the human part's greeting; the rest of the text names recipients and replies
_EXPLANATION = (
    "This is the mail system at {host}.\n\n"
    "Your message could not be delivered to the recipients below, and will not be\n"
    "tried again for them. The mail server's reply follows each; the header of your\n"
    "message is attached.\n"
)


def status_of(refusal: Refusal) -> str:
    """RFC 3464's ``Status``: the reply's enhanced code when it has one of its class, else the
    class's catch-all (5.0.0; 4.4.7, "delivery time expired", for a refusal for now given up on)."""
    code = refusal.enhanced
    klass = 5 if refusal.permanent else 4
    if code is not None and code[0] == klass:
        return ".".join(map(str, code))
    return "5.0.0" if refusal.permanent else "4.4.7"


def header_of(raw: bytes) -> bytes:
    """The header section of a raw message: everything before the first empty line."""
    end = re.search(rb"\r?\n\r?\n", raw)
    return raw if end is None else raw[: end.start()] + b"\r\n"


def delivery_report(
    *,
    original: bytes,
    failed: Sequence[Refusal],
    to: str,
    reporter: str,
    from_address: str,
    arrived_at: datetime,
    now: datetime,
    message_id: str,
) -> bytes:
    """The report to ``to`` (the original's envelope sender) that ``failed`` were not delivered.

    ``reporter`` is this host's name (RFC 3464 ``Reporting-MTA``), ``arrived_at`` when the
    original was accepted, ``message_id`` the report's own (stable across attempts).
    """
    report = EmailMessage(policy=email.policy.SMTP)
    report["From"] = f"Mail Delivery System <{from_address}>"
    report["To"] = to
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Date"] = format_datetime(now)
    report["Message-ID"] = message_id
    # RFC 3834 §5: a report answers a message; autoresponders leave it alone
    report["Auto-Submitted"] = "auto-replied"
    report.set_content(_explanation(reporter, failed))
    report.make_mixed()
    report.replace_header("Content-Type", "multipart/report")
    report.set_param("report-type", "delivery-status")
    report.attach(_status(reporter, arrived_at, failed))
    report.attach(_headers(original))
    return report.as_bytes()


def _explanation(reporter: str, failed: Sequence[Refusal]) -> str:
    lines = [f"<{r.recipient}>: {r.reply}" for r in failed]
    return _EXPLANATION.format(host=reporter) + "\n" + "\n".join(lines) + "\n"


def _status(reporter: str, arrived_at: datetime, failed: Sequence[Refusal]) -> EmailMessage:
    """``message/delivery-status``: a block about the message, then one per recipient."""
    per_message = Message(policy=email.policy.SMTP)
    per_message["Reporting-MTA"] = f"dns; {reporter}"
    per_message["Arrival-Date"] = format_datetime(arrived_at)
    blocks: list[Message[str, str] | str] = [per_message]
    for refusal in failed:
        block = Message(policy=email.policy.SMTP)
        block["Final-Recipient"] = f"rfc822; {refusal.recipient}"
        block["Action"] = "failed"
        block["Status"] = status_of(refusal)
        block["Diagnostic-Code"] = f"{refusal.diagnostic}; {refusal.reply}"
        blocks.append(block)
    part = EmailMessage(policy=email.policy.SMTP)
    part["Content-Type"] = "message/delivery-status"
    part.set_payload(blocks)
    return part


def _headers(original: bytes) -> EmailMessage:
    """The original's header as it came (8-bit bytes kept: the generator writes them back)."""
    header = header_of(original)
    part = EmailMessage(policy=email.policy.SMTP)
    part["Content-Type"] = "text/rfc822-headers"
    part["Content-Transfer-Encoding"] = "7bit" if header.isascii() else "8bit"
    part.set_payload(header.decode("ascii", errors="surrogateescape"))
    return part
