"""Slack message text from notification content: escaped where Slack parses it, cut where it must be."""

from __future__ import annotations

from channels.slack_blocks import HEADER_MAX, TEXT_MAX, cut, escape, render
from tests.support import outbound_message

HOSTILE = "<!here> <!channel> <@U0CEO> <https://evil.example/login|re-enter your password>"


def test_text_fallback_escapes_mentions_and_links() -> None:
    """The top-level text (push notifications) cannot ping @here/@channel, a user, or plant a link."""
    text, _ = render(outbound_message(1, subject="<!here> Disk full", body=HOSTILE))
    assert "<" not in text and ">" not in text
    assert "&lt;!here&gt; Disk full" in text
    assert "&lt;https://evil.example/login|re-enter your password&gt;" in text


def test_text_fallback_escapes_ampersands_once() -> None:
    """A body's own '&lt;' arrives as written (&amp;lt;), not as a '<' Slack would parse."""
    text, _ = render(outbound_message(1, subject="R&D", body="a &lt; b"))
    assert text == "CRITICAL: R&amp;D\na &amp;lt; b"


def test_header_is_plain_text_and_not_escaped() -> None:
    """plain_text is never parsed by Slack: an '&' there stays one character, not '&amp;'."""
    _, blocks = render(outbound_message(1, subject="R&D <db-1>"))
    assert blocks[0]["text"]["text"].endswith("CRITICAL: R&D <db-1>")


def test_header_is_not_cut_at_its_first_ampersand() -> None:
    """A long subject with an early '&' keeps the header's 150 characters."""
    _, blocks = render(outbound_message(1, subject="R&D cluster: " + "replication lag on db-7 " * 10))
    header = blocks[0]["text"]["text"]
    assert len(header) == HEADER_MAX
    assert header.endswith("\u2026")


def test_text_fallback_is_not_cut_at_its_first_ampersand() -> None:
    """A long body with an early '&' keeps the fallback's 4000 characters."""
    text, _ = render(outbound_message(1, body="R&D cluster db-1: " + "disk usage at 99 percent. " * 300))
    assert len(text) == TEXT_MAX


def test_cut_drops_an_entity_the_limit_would_split() -> None:
    """An escaped '&amp;' crossing the limit goes whole: no dangling '&am' in the message."""
    text = escape("x" * 7 + "&tail")  # "xxxxxxx&amp;tail"
    assert cut(text, 10) == "xxxxxxx\u2026"
    assert cut(text, 13) == "xxxxxxx&amp;\u2026"


def test_cut_keeps_an_ampersand_without_an_entity_in_plain_text() -> None:
    """Unescaped (plain_text) the '&' is a character: cut keeps it like any other."""
    assert cut("ab&cdefgh", 5, escaped=False) == "ab&c\u2026"
