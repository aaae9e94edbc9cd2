"""An email message as readable text for the backup channels (Slack, SMS, webhooks).

The plain-text part is preferred; an HTML-only message is converted. Signatures are trimmed, and
quoted originals too when the headers say the message is a reply (only the headers can tell, so the
decision is made here and :mod:`daemon.intake.plaintext` is told). A forwarded message (an attached
message/rfc822) follows under a heading, rendered by the same rules. Attachments are listed by name
and size, and the whole is cut to a length. Nothing here raises on malformed mail: what cannot be
decoded is shown with replacement characters.
"""

from __future__ import annotations

import email
import email.errors
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import default as default_policy

from daemon.intake import charsets
from daemon.intake.plaintext import cap, html_to_text, tidy, trim_reply

# Errors the stdlib raises on hostile or broken mail (header parsing, unknown charsets).
_DECODE_ERRORS = (LookupError, ValueError, TypeError, IndexError, AttributeError, email.errors.MessageError)
# Reply prefixes as clients write them: English, German, Dutch, the Nordic languages, Finnish, Polish,
# French, Italian, Portuguese, Turkish, Latvian, Hungarian, Greek, Chinese; numbered ("Re[2]:",
# "Re^2:") and after a mailing-list tag ("[ops] Re:"). Italian Outlook's bare "R:" is left out: too
# likely in an alert's subject, and such replies carry In-Reply-To anyway.
# https://en.wikipedia.org/wiki/List_of_email_subject_abbreviations
_REPLY_SUBJECT = re.compile(
    r"^\s*(?:\[[^\]]{0,40}\]\s*)?"
    r"(?:re|aw|antw|antwort|sv|svar|vs|odp|odg|réf|rép|rif|res|ynt|yan\u0131t|atb|vá|απ|回复|回覆|答复)"
    r"\s*(?:\[\d+\]|\^\d+|\(\d+\))?\.?\s*[:\uff1a]",  # \uff1a: the full-width colon of CJK text
    re.IGNORECASE,
)
_FORWARD_TYPES = frozenset({"message/rfc822", "message/global"})
#: a forward of a forward of a forward is shown; deeper ones (crafted mail) only by their headers
_MAX_FORWARD_DEPTH = 3
FORWARDED = "---------- Forwarded message ----------"
#: what of a header's value is decoded: the email package's parser takes time quadratic in a
#: value's length (seconds for a 200 KB Subject, hours for megabytes, a worker thread held all
#: along), and no subject line, rule or label needs more
HEADER_MAX_CHARS = 16 * 1024


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str | None
    content_type: str
    size: int


def parse(raw: bytes, *, headers_only: bool = False) -> EmailMessage:
    """The message as the email package's modern API sees it; with ``headers_only`` its body is one
    string, its MIME structure left unparsed."""
    message = BytesParser(policy=default_policy).parsebytes(raw, headersonly=headers_only)
    assert isinstance(message, EmailMessage)  # guaranteed by policy=default
    return message


def header(message: Message, name: str) -> str | None:
    """A header's first value, decoded (RFC 2047), on one line; None when absent."""
    raw = _raw_value(message, name)
    return None if raw is None else _decoded(message, name, raw)


def _decoded(message: Message, name: str, raw: str) -> str:
    """The header ``name``'s ``raw`` value decoded, on one line, its first HEADER_MAX_CHARS only."""
    raw = raw[:HEADER_MAX_CHARS]
    value: object
    # 8-bit bytes that are not UTF-8 (a legacy application's Latin-1 "Störung") the email package
    # shows as U+FFFD, where a rule or a reader needs the text: read as the body would be
    if not _utf8(raw) or any(charsets.misread(c) for c, _, _ in charsets.ENCODED_WORD.findall(raw)):
        value = charsets.decode_words(raw)
    else:
        try:
            value = message.policy.header_fetch_parse(name, raw)
        except _DECODE_ERRORS:  # the modern header parser can fail on crafted input
            value = charsets.decode_words(raw)
    return " ".join(str(value).split())


def _utf8(raw: str) -> bool:
    """Whether a raw header value (its 8-bit bytes kept as surrogates by the parser) is UTF-8."""
    try:
        raw.encode("utf-8", errors="surrogateescape").decode("utf-8")
    except UnicodeError:
        return False
    return True


def _raw_value(message: Message, name: str) -> str | None:
    for key, raw in message.raw_items():
        if key.lower() == name.lower():
            return str(raw)
    return None


def headers(message: Message) -> dict[str, str]:
    """Header names lower-cased to their first value, decoded (in one pass: looking each name up
    took time quadratic in the number of headers, minutes for a crafted message)."""
    out: dict[str, str] = {}
    for key, raw in message.raw_items():
        name = key.lower()
        if name not in out:
            out[name] = _decoded(message, key, str(raw))
    return out


def subject(message: Message) -> str:
    return header(message, "Subject") or "(no subject)"


def is_reply(message: Message) -> bool:
    """Whether the message answers another, the only kind whose quote-like lines may be cut."""
    if header(message, "In-Reply-To") or header(message, "References"):
        return True
    return bool(_REPLY_SUBJECT.match(header(message, "Subject") or ""))


def render(message: EmailMessage, *, max_chars: int = 4000) -> str:
    """The body as trimmed text, forwarded messages, the attachments, within ``max_chars`` characters."""
    text = _text(message, depth=0)
    listed = attachments(message)
    if not listed:
        return cap(text, max_chars)
    listing = "Attachments:\n" + "\n".join(_describe(a) for a in listed)
    listed_chars = len(_PARAGRAPH) + len(listing)
    if listed_chars > max_chars // 2:
        # so many attachments that listing them all would crowd out the message itself
        return cap(_paragraphs(text, listing), max_chars)
    return _paragraphs(cap(text, max_chars - listed_chars), listing)


#: what separates the text, each forwarded message and the attachment list
_PARAGRAPH = "\n\n"


def _paragraphs(*texts: str) -> str:
    """The texts that are not empty, a blank line between them (none before the first)."""
    return _PARAGRAPH.join(text for text in texts if text)


def _text(message: EmailMessage, *, depth: int) -> str:
    """The message's own trimmed text, then each message forwarded in it."""
    texts = [trim_reply(body_text(message), reply=is_reply(message))]
    texts += [_forwarded_text(inner, depth=depth + 1) for inner in _forwarded(message)]
    return _paragraphs(*texts)


def _forwarded_text(message: EmailMessage, *, depth: int) -> str:
    lines = [FORWARDED]
    lines += [f"{name}: {value}" for name in ("From", "Date", "Subject") if (value := header(message, name))]
    if depth > _MAX_FORWARD_DEPTH:
        return "\n".join([*lines, "(nested too deeply to show)"])
    return "\n".join(lines) + "\n\n" + _text(message, depth=depth)


def _forwarded(message: EmailMessage) -> Iterator[EmailMessage]:
    for part in _own_parts(message):
        if (inner := _attached_message(part)) is not None:
            yield inner


def body_text(message: EmailMessage) -> str:
    """The message's inline text parts as text, in order (of alternatives the plain one, the HTML
    one converted when the plain one is blank); empty when it has none."""
    try:
        return "\n\n".join(text for part in _inline_parts(message) if (text := _rendered(part)))
    except _DECODE_ERRORS:
        return ""


def _inline_parts(part: Message) -> list[Message]:
    """The leaf parts the text is made of: every inline text/plain or text/html part, not only the
    first (a report's second inline part is often the one that matters); an attached message is
    shown apart (see _text)."""
    if part.get_content_type() in _FORWARD_TYPES:
        return []
    if part.is_multipart():
        payload = part.get_payload()
        subs = [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []
        if part.get_content_subtype() == "alternative":
            return _best_alternative(subs)
        return [leaf for sub in subs for leaf in _inline_parts(sub)]
    shown = part.get_content_type() in ("text/plain", "text/html")
    return [part] if shown and part.get_content_disposition() != "attachment" else []


def _best_alternative(alternatives: list[Message]) -> list[Message]:
    """The plain alternative unless it is blank, else the richest one with text (RFC 2046 §5.1.4:
    the last is the richest)."""
    plain = [a for a in alternatives if a.get_content_type() == "text/plain"][:1]
    if plain and _rendered(plain[0]).strip():
        return plain
    for alternative in reversed(alternatives):
        parts = _inline_parts(alternative)
        if any(_rendered(p).strip() for p in parts):
            return parts
    return plain


def _rendered(part: Message) -> str:
    content = _text_of(part)
    return html_to_text(content) if part.get_content_subtype() == "html" else tidy(content)


def _text_of(part: Message) -> str:
    """The part's text, decoded by its charset, where senders mislabel it as they often do."""
    try:
        payload = part.get_payload(decode=True)
        charset = part.get_content_charset()
    except _DECODE_ERRORS:
        return ""
    if not isinstance(payload, bytes):
        return ""
    return charsets.decoded(payload, charset).replace("\r\n", "\n").replace("\r", "\n")


def attachments(message: EmailMessage) -> list[Attachment]:
    """Every part that is an attachment or carries a file name, in message order."""
    return [_attachment(part) for part in _attached_parts(message)]


def _attached_parts(message: EmailMessage, depth: int = 0) -> Iterator[Message]:
    """The attachments, those of the forwarded messages shown (see _text) included."""
    try:
        shown = _inline_parts(message)
    except _DECODE_ERRORS:
        shown = []
    for part in _own_parts(message):
        inner = _attached_message(part)
        if inner is not None and depth < _MAX_FORWARD_DEPTH:
            yield from _attached_parts(inner, depth + 1)
        elif inner is None and all(part is not s for s in shown) and _is_attachment(part):
            yield part


def _is_attachment(part: Message) -> bool:
    if part.is_multipart():
        return False
    return part.get_content_disposition() == "attachment" or bool(_filename(part))


def _own_parts(part: Message) -> Iterator[Message]:
    """``part`` and its subparts in order, an attached message as one part: its own are its own."""
    yield part
    if part.is_multipart() and part.get_content_type() not in _FORWARD_TYPES:
        for sub in part.get_payload():
            if isinstance(sub, Message):
                yield from _own_parts(sub)


def _attached_message(part: Message) -> EmailMessage | None:
    if part.get_content_type() not in _FORWARD_TYPES:
        return None
    payload = part.get_payload()
    inner = payload[0] if isinstance(payload, list) and payload else None
    return inner if isinstance(inner, EmailMessage) else None


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
