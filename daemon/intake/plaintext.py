"""Plain text from an email's body: HTML converted, quoted replies and signatures trimmed, length capped.

HTML is converted with the standard library's ``html.parser`` (alert mail is simple markup:
paragraphs, line breaks, lists, tables, links, so a dependency such as html2text would buy little).
Everything here takes text and returns text; :mod:`daemon.intake.mailtext` takes it from a message.
"""

from __future__ import annotations

import re
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
#: elements whose text is never shown. Not <head> as a whole: HTML5 lets </head> be omitted (and
#: minifiers drop it), and a browser ends the head at the first tag or text that cannot be in it
#: (<body>, <p>...); the text-bearing ones it can hold are these (<meta>, <link>, <base> hold none).
#: https://html.spec.whatwg.org/multipage/syntax.html#optional-tags
_SKIP_TAGS = frozenset({"script", "style", "title", "template"})
# Lines that start the quoted original in replies: Gmail/Apple ("On … wrote:"), Outlook's
# "-----Original Message-----" and its underscore rule before a "From:" block. Machine mail (most of
# what a smart host carries) uses the same shapes for content: a rule under a heading, a "> 95%"
# threshold, a "From:"/"Date:" pair in a report. So they only count in a reply.
_REPLY_HEADER = re.compile(r"^(On\b.{0,300}\bwrote:|-{2,}\s*Original Message\s*-{2,}|_{20,})$", re.IGNORECASE)
# Gmail wraps a long attribution over two lines: "On Mon, 1 Jan 2024 at 10:00, Alice <" and
# "alice@example.com> wrote:"; the two are matched joined by a space.
_ATTRIBUTION = re.compile(r"^On\b.{0,300}\bwrote:$", re.IGNORECASE)
# Outlook without the rule: "From: …" directly followed by "Sent: …" (or "Date: …").
_OUTLOOK_FROM = re.compile(r"^From:\s.+$", re.IGNORECASE)
_OUTLOOK_SENT = re.compile(r"^(Sent|Date):\s.+$", re.IGNORECASE)
# RFC 3676 section 4.3 signature separator. People also send it without the space, but scripts put a
# bare "--" between a message and its log, so that one only counts in a reply.
_SIGNATURE = "-- "
# What follows a separator that is a log or a traceback rather than a signature: Python's traceback,
# an exception name, Go's panic, an ISO timestamp, a log level.
_LOG_START = re.compile(
    r"^(Traceback \(most recent call last\)|[\w.]*(Error|Exception)\b|panic:|\d{4}-\d\d-\d\d[T ]\d"
    r"|\[?(DEBUG|INFO|WARN|WARNING|ERROR|CRITICAL|FATAL)\b)"
)
#: how many lines after a separator are looked at for the first one that is not blank
_LOOKAHEAD = 3
#: characters that show nothing, which email templates repeat after a preheader (the preview text
#: a mail client lists) to keep the body out of the preview: "&#847; &zwnj; &nbsp;" (Litmus),
#: "&zwnj;&nbsp;" (Mailchimp), "&#8199;&#65279;&#847;", "&#8203;". ZWNJ and ZWJ only beside spaces:
#: between letters they shape Persian and Indic scripts, between emoji they join them.
_INVISIBLE = re.compile(r"[\u00ad\u034f\u200b\u2060\ufeff]+")
_LONE_JOINERS = re.compile(r"(?<!\S)[\u200c\u200d]+|[\u200c\u200d]+(?!\S)")
#: quote marks shown at most: each line of a blockquote nested N deep took N of them, so a
#: kilobyte of unclosed <blockquote> tags made the text (and the daemon's memory) gigabytes
_MAX_QUOTE_DEPTH = 8


def cap(text: str, max_chars: int) -> str:
    """``text`` cut at a line or word boundary so that it fits ``max_chars`` with the marker."""
    if len(text) <= max_chars:
        return text
    room = max(0, max_chars - len(TRUNCATED))
    cut = text[:room]
    boundary = max(cut.rfind("\n"), cut.rfind(" "))
    return (cut[:boundary] if boundary > room * 3 // 4 else cut).rstrip() + TRUNCATED[: max_chars - room]


def trim_reply(text: str, *, reply: bool = False) -> str:
    """Drop the signature and, in a ``reply``, the quoted original, unless nothing else would be left.

    ``reply`` is decided from the headers by the caller; without it only an RFC 3676 "-- " signature
    goes, because in machine mail the shapes of a quote are usually the alert itself.
    """
    lines = text.splitlines()
    for index in range(1, len(lines)):
        if _starts_tail(lines, index, reply=reply) and "".join(lines[:index]).strip():
            lines = lines[:index]
            break
    return tidy("\n".join(_unquoted(lines) if reply else lines))


def _starts_tail(lines: list[str], index: int, *, reply: bool) -> bool:
    return _starts_signature(lines, index, reply=reply) or (reply and _starts_quote(lines, index))


def _starts_signature(lines: list[str], index: int, *, reply: bool) -> bool:
    line = lines[index]
    if line != _SIGNATURE and not (reply and line.rstrip() == "--"):
        return False
    after = [n.strip() for n in lines[index + 1 : index + 1 + _LOOKAHEAD] if n.strip()]
    return not (after and _LOG_START.match(after[0]))


def _starts_quote(lines: list[str], index: int) -> bool:
    line = lines[index].strip()
    following = lines[index + 1].strip() if index + 1 < len(lines) else ""
    if _REPLY_HEADER.match(line) or _ATTRIBUTION.match(f"{line} {following}"):
        return True
    return bool(_OUTLOOK_FROM.match(line) and _OUTLOOK_SENT.match(following))


def _unquoted(lines: list[str]) -> list[str]:
    unquoted = [line for line in lines if not line.lstrip().startswith(">")]
    return unquoted if "".join(unquoted).strip() else lines


def tidy(text: str) -> str:
    """One kind of line break, no trailing spaces, at most one blank line in a row, no blank ends.

    The "-- " signature separator keeps its space: it is what tells it from a bare "--" in a log.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines = [line if line == _SIGNATURE else line.rstrip() for line in lines]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(markup: str) -> str:
    """Readable text from HTML: blocks on their own lines, list items with "- ", links with their URL."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return tidy(parser.text())


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
            # a link never holds another: a browser ends the open one (HTML's adoption agency), and
            # keeping both made each piece of text be recorded once per open link (quadratic time)
            if self._links:
                self._close_link()
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
            visible = _LONE_JOINERS.sub("", _INVISIBLE.sub("", data))
            self._write(visible if self._pre else re.sub(r"\s+", " ", visible))

    def _write(self, text: str) -> None:
        at_line_start = not self._out or self._out[-1].endswith("\n")
        if at_line_start and not self._pre:
            text = text.lstrip()
        if at_line_start and self._quote and text:
            text = "> " * min(self._quote, _MAX_QUOTE_DEPTH) + text
        if text:
            self._out.append(text)
            for _, parts in self._links:
                parts.append(text)

    def _newline(self, *, blank: bool) -> None:
        wanted = "\n\n" if blank else "\n"
        while self._out and not "".join(self._out[-2:]).endswith(wanted):
            self._out.append("\n")
