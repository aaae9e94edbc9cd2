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
_SKIP_TAGS = frozenset({"head", "script", "style", "title", "template"})
# Lines that start the quoted original in replies: Gmail/Apple ("On … wrote:"), Outlook's
# "-----Original Message-----" and its underscore rule before a "From:" block.
_REPLY_HEADER = re.compile(r"^(On\b.{0,300}\bwrote:|-{2,}\s*Original Message\s*-{2,}|_{20,})$", re.IGNORECASE)
# Outlook without the rule: "From: …" directly followed by "Sent: …" (or "Date: …").
_OUTLOOK_FROM = re.compile(r"^From:\s.+$", re.IGNORECASE)
_OUTLOOK_SENT = re.compile(r"^(Sent|Date):\s.+$", re.IGNORECASE)
# RFC 3676 section 4.3 signature separator "-- ", often sent without its trailing space.
_SIGNATURE = re.compile(r"^--\s?$")


def cap(text: str, max_chars: int) -> str:
    """``text`` cut at a line or word boundary so that it fits ``max_chars`` with the marker."""
    if len(text) <= max_chars:
        return text
    room = max(0, max_chars - len(TRUNCATED))
    cut = text[:room]
    boundary = max(cut.rfind("\n"), cut.rfind(" "))
    return (cut[:boundary] if boundary > room * 3 // 4 else cut).rstrip() + TRUNCATED[: max_chars - room]


def trim_reply(text: str) -> str:
    """Drop the quoted original of a reply and the signature, unless nothing else would be left."""
    lines = text.splitlines()
    for index in range(1, len(lines)):
        if _starts_quote_or_signature(lines, index) and "".join(lines[:index]).strip():
            lines = lines[:index]
            break
    unquoted = [line for line in lines if not line.lstrip().startswith(">")]
    return tidy("\n".join(unquoted if "".join(unquoted).strip() else lines))


def _starts_quote_or_signature(lines: list[str], index: int) -> bool:
    line = lines[index].strip()
    if _SIGNATURE.match(lines[index]) or _REPLY_HEADER.match(line):
        return True
    following = lines[index + 1 : index + 2]
    return bool(_OUTLOOK_FROM.match(line)) and any(_OUTLOOK_SENT.match(n.strip()) for n in following)


def tidy(text: str) -> str:
    """One kind of line break, no trailing spaces, at most one blank line in a row, no blank ends."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
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
