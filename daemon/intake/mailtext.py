"""An email message as readable text for the backup channels (Slack, SMS, webhooks).

The plain-text part is preferred; an HTML-only message is converted. Quoted replies and signatures
are trimmed, attachments are listed by name and size, and the whole is cut to a length (the text
itself is worked on in :mod:`daemon.intake.plaintext`). Nothing here raises on malformed mail: what
cannot be decoded is shown with replacement characters.
"""

from __future__ import annotations

import email
import email.errors
import email.header
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.policy import default as default_policy

from daemon.intake.plaintext import cap, html_to_text, tidy, trim_reply

# Errors the stdlib raises on hostile or broken mail (header parsing, unknown charsets).
_DECODE_ERRORS = (LookupError, ValueError, TypeError, IndexError, AttributeError, email.errors.MessageError)


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str | None
    content_type: str
    size: int


def parse(raw: bytes) -> EmailMessage:
    """The message as the email package's modern API sees it."""
    message = email.message_from_bytes(raw, policy=default_policy)
    assert isinstance(message, EmailMessage)  # guaranteed by policy=default
    return message


def header(message: Message, name: str) -> str | None:
    """A header's first value, decoded (RFC 2047), on one line; None when absent."""
    try:
        value = message.get(name)
    except _DECODE_ERRORS:
        value = _decode_words(message, name)
    if value is None:
        return None
    return " ".join(str(value).split())


def _decode_words(message: Message, name: str) -> str | None:
    # The modern header parser can fail on crafted input; the legacy decoder is more forgiving.
    for key, raw in message.raw_items():
        if key.lower() == name.lower():
            parts = email.header.decode_header(str(raw))
            return "".join(
                p.decode(c or "ascii", errors="replace") if isinstance(p, bytes) else p for p, c in parts
            )
    return None


def headers(message: Message) -> dict[str, str]:
    """Header names lower-cased to their first value, decoded."""
    out: dict[str, str] = {}
    for key in message:
        name = key.lower()
        if name not in out and (value := header(message, key)) is not None:
            out[name] = value
    return out


def subject(message: Message) -> str:
    return header(message, "Subject") or "(no subject)"


def render(message: EmailMessage, *, max_chars: int = 4000) -> str:
    """The body as trimmed text, then the attachments, within ``max_chars`` characters."""
    text = trim_reply(body_text(message))
    listed = attachments(message)
    if not listed:
        return cap(text, max_chars)
    tail = "\n\nAttachments:\n" + "\n".join(_describe(a) for a in listed)
    if len(tail) > max_chars // 2:
        # so many attachments that listing them all would crowd out the message itself
        return cap(text + tail, max_chars)
    return cap(text, max_chars - len(tail)) + tail


def body_text(message: EmailMessage) -> str:
    """The plain-text body, or the HTML body converted; empty when the message has neither."""
    try:
        part = message.get_body(preferencelist=("plain", "html"))
    except _DECODE_ERRORS:
        part = None
    if part is None:
        return ""
    content = _text_of(part)
    return html_to_text(content) if part.get_content_subtype() == "html" else tidy(content)


def _text_of(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except _DECODE_ERRORS:
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


def attachments(message: EmailMessage) -> list[Attachment]:
    """Every part that is an attachment or carries a file name, in message order."""
    return [_attachment(part) for part in _attached_parts(message)]


def _attached_parts(message: EmailMessage) -> Iterator[Message]:
    try:
        body = message.get_body(preferencelist=("plain", "html"))
    except _DECODE_ERRORS:
        body = None
    for part in message.walk():
        if part.is_multipart() or part is body:
            continue
        if part.get_content_disposition() == "attachment" or _filename(part):
            yield part


def _attachment(part: Message) -> Attachment:
    payload = part.get_payload(decode=True)
    size = len(payload) if isinstance(payload, bytes) else 0
    return Attachment(_filename(part), part.get_content_type(), size)


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except _DECODE_ERRORS:
        return None
    return " ".join(name.split()) if name else None


def _describe(attachment: Attachment) -> str:
    name = attachment.filename or f"(unnamed {attachment.content_type})"
    return f"- {name} ({human_size(attachment.size)})"


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


# Importance (RFC 2156), X-Priority (1-2 high, 3 normal, 4-5 low), Priority (RFC 2156) and Outlook's
# X-MSMail-Priority, in the order they are consulted.
_IMPORTANCE = {
    "importance": {"high": "high", "normal": "normal", "low": "low"},
    "x-priority": {"1": "high", "2": "high", "3": "normal", "4": "low", "5": "low"},
    "priority": {"urgent": "high", "normal": "normal", "non-urgent": "low"},
    "x-msmail-priority": {"high": "high", "normal": "normal", "low": "low"},
}


def importance(values: dict[str, str]) -> str:
    """The importance, high, normal or low, from the first priority header present (see headers())."""
    for name, mapping in _IMPORTANCE.items():
        value = values.get(name, "").strip().lower()
        # X-Priority is often "1 (Highest)": the number decides
        key = value.split(maxsplit=1)[0] if value else ""
        if key in mapping:
            return mapping[key]
    return "normal"
