"""An email message as readable text for the backup channels (Slack, SMS, webhooks).

The plain-text part is preferred; an HTML-only message is converted with the standard library's
``html.parser`` (alert mail is simple markup: paragraphs, line breaks, lists, tables, links, so a
dependency such as html2text would buy little). Quoted replies and signatures are trimmed,
attachments are listed by name and size, and the whole is cut to a length. Nothing here raises on
malformed mail: what cannot be decoded is shown with replacement characters.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.policy import default as default_policy
from html.parser import HTMLParser

TRUNCATED = "\n[… truncated]"
_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "figcaption",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tr",
        "ul",
    ]
)
#: blocks set off by a blank line, the others just start a new line
_PARAGRAPH_TAGS = frozenset(
    ["blockquote", "dl", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "ol", "p", "pre", "table", "ul"]
)
_SKIP_TAGS = frozenset({"head", "script", "style", "title", "template"})
# Lines that start the quoted original in replies: Gmail/Apple ("On … wrote:"), Outlook's
# "-----Original Message-----" and its underscore rule before a "From:" block.
_REPLY_HEADER = re.compile(r"^(On\b.{0,300}\bwrote:|-{2,}\s*Original Message\s*-{2,}|_{20,})$", re.IGNORECASE)
# Outlook without the rule: "From: …" directly followed by "Sent: …" (or "Date: …").
_OUTLOOK_FROM = re.compile(r"^From:\s.+$", re.IGNORECASE)
_OUTLOOK_SENT = re.compile(r"^(Sent|Date):\s.+$", re.IGNORECASE)
# RFC 3676 section 4.3 signature separator "-- ", often sent without its trailing space.
_SIGNATURE = re.compile(r"^--\s?$")
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


def cap(text: str, max_chars: int) -> str:
    """``text`` cut at a line or word boundary so that it fits ``max_chars`` with the marker."""
    if len(text) <= max_chars:
        return text
    room = max(0, max_chars - len(TRUNCATED))
    cut = text[:room]
    boundary = max(cut.rfind("\n"), cut.rfind(" "))
    return (cut[:boundary] if boundary > room * 3 // 4 else cut).rstrip() + TRUNCATED[: max_chars - room]


def body_text(message: EmailMessage) -> str:
    """The plain-text body, or the HTML body converted; empty when the message has neither."""
    try:
        part = message.get_body(preferencelist=("plain", "html"))
    except _DECODE_ERRORS:
        part = None
    if part is None:
        return ""
    content = _text_of(part)
    return html_to_text(content) if part.get_content_subtype() == "html" else _tidy(content)


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


def trim_reply(text: str) -> str:
    """Drop the quoted original of a reply and the signature, unless nothing else would be left."""
    lines = text.splitlines()
    for index in range(1, len(lines)):
        if _starts_quote_or_signature(lines, index) and "".join(lines[:index]).strip():
            lines = lines[:index]
            break
    unquoted = [line for line in lines if not line.lstrip().startswith(">")]
    return _tidy("\n".join(unquoted if "".join(unquoted).strip() else lines))


def _starts_quote_or_signature(lines: list[str], index: int) -> bool:
    line = lines[index].strip()
    if _SIGNATURE.match(lines[index]) or _REPLY_HEADER.match(line):
        return True
    following = lines[index + 1 : index + 2]
    return bool(_OUTLOOK_FROM.match(line)) and any(_OUTLOOK_SENT.match(n.strip()) for n in following)


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(markup: str) -> str:
    """Readable text from HTML: blocks on their own lines, list items with "- ", links with their URL."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return _tidy(parser.text())


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._skip = 0
        self._pre = 0
        self._quote = 0
        #: the open links: their href and the text written inside them so far
        self._links: list[tuple[str | None, list[str]]] = []

    def text(self) -> str:
        return "".join(self._out)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag == "a":
            self._links.append((dict(attrs).get("href"), []))
        elif tag == "br":
            self._out.append("\n")
        elif tag in _BLOCK_TAGS:
            self._newline(blank=tag in _PARAGRAPH_TAGS)
            self._pre += tag == "pre"
            self._quote += tag == "blockquote"
            if tag == "li":
                self._write("- ")
        elif tag in ("td", "th"):
            self._write(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._links:
            self._close_link()
        elif tag in _BLOCK_TAGS and tag != "br":
            self._pre -= tag == "pre" and self._pre > 0
            self._quote -= tag == "blockquote" and self._quote > 0
            self._newline(blank=tag in _PARAGRAPH_TAGS)

    def _close_link(self) -> None:
        href, parts = self._links.pop()
        label = "".join(parts).strip()
        if href and href.startswith(("http:", "https:", "mailto:")) and href.removeprefix("mailto:") != label:
            self._write(f" ({href})" if label else href)

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._write(data if self._pre else re.sub(r"\s+", " ", data))

    def _write(self, text: str) -> None:
        at_line_start = not self._out or self._out[-1].endswith("\n")
        if at_line_start and not self._pre:
            text = text.lstrip()
        if at_line_start and self._quote and text:
            text = "> " * self._quote + text
        if text:
            self._out.append(text)
            for _, parts in self._links:
                parts.append(text)

    def _newline(self, *, blank: bool) -> None:
        wanted = "\n\n" if blank else "\n"
        while self._out and not "".join(self._out[-2:]).endswith(wanted):
            self._out.append("\n")


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
