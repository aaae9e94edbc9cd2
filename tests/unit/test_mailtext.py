"""Email messages rendered as readable text for the backup channels."""

from __future__ import annotations

from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.intake.mailtext import (
    attachments,
    header,
    headers,
    importance,
    parse,
    render,
    subject,
)
from daemon.intake.plaintext import TRUNCATED, cap, html_to_text, trim_reply

HTML = """<html><head><style>p {color: red}</style><title>ignored</title></head><body>
<h1>Alert</h1><p>Disk <b>full</b> on&nbsp;db-1.<br>Act now.</p>
<ul><li>one</li><li>two, <a href="https://status.example.com/i/42">details</a></li></ul>
<script>track()</script></body></html>"""


def test_html_becomes_text_with_blocks_lists_and_links() -> None:
    """Paragraphs and breaks become lines, list items get dashes, links keep their URL, scripts vanish."""
    assert html_to_text(HTML) == (
        "Alert\n\nDisk full on db-1.\nAct now.\n\n- one\n- two, details (https://status.example.com/i/42)"
    )


def test_html_link_whose_text_is_its_url_is_not_repeated() -> None:
    """A link showing its own address (or mailto: address) is written once."""
    html = '<a href="https://x.test/">https://x.test/</a> <a href="mailto:a@x.test">a@x.test</a>'
    assert html_to_text(html) == "https://x.test/ a@x.test"


def test_html_blockquote_is_quoted() -> None:
    """A blockquote (how mail clients quote in HTML) comes out with "> " so trimming can drop it."""
    assert html_to_text("<p>new</p><blockquote><p>old</p></blockquote>") == "new\n\n> old"


def test_html_pre_keeps_its_whitespace() -> None:
    """Preformatted text (log excerpts) keeps its spacing and line breaks."""
    assert html_to_text("<pre>a   b\n  c</pre>") == "a   b\n  c"


def test_quoted_reply_is_trimmed() -> None:
    """The "On … wrote:" line and the quoted original after it are dropped."""
    text = "Fixed, thanks.\n\nOn Mon, 1 Jan 2024 at 10:00, Bob <bob@example.com> wrote:\n> is it down?\n"
    assert trim_reply(text) == "Fixed, thanks."


def test_outlook_original_message_is_trimmed() -> None:
    """Outlook's "-----Original Message-----" and "From:/Sent:" blocks start the quoted original."""
    assert trim_reply("Done.\n-----Original Message-----\nFrom: Bob\nold") == "Done."
    assert trim_reply("Done.\n\nFrom: Bob Smith\nSent: Monday\nTo: ops\n\nold") == "Done."


def test_from_line_in_the_body_is_not_a_reply_header() -> None:
    """A "From:" line without a "Sent:" after it is content, not the start of a quote."""
    assert trim_reply("Alert\nFrom: web-3\nLoad 12") == "Alert\nFrom: web-3\nLoad 12"


def test_signature_is_trimmed() -> None:
    """Everything after the "-- " separator (RFC 3676) is dropped."""
    assert trim_reply("Backup failed.\n-- \nThe backup robot\nhttps://robot.example") == "Backup failed."


def test_fully_quoted_text_is_kept() -> None:
    """A message that is nothing but quotes keeps them rather than becoming empty."""
    assert trim_reply("> forwarded alert\n> details") == "> forwarded alert\n> details"


def test_cap_cuts_at_a_word_and_marks_it() -> None:
    """Long text is cut at a word boundary, marked, and fits the limit."""
    capped = cap("word " * 100, 60)
    assert capped.endswith(TRUNCATED)
    assert len(capped) <= 60
    assert capped.removesuffix(TRUNCATED).endswith("word")


def _mixed() -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = "=?utf-8?q?St=C3=B6rung_im_Rechenzentrum?="
    msg.set_content("Plain body.")
    msg.add_alternative("<p>HTML body.</p>", subtype="html")
    msg.add_attachment(b"%PDF" * 1000, maintype="application", subtype="pdf", filename="report.pdf")
    msg.add_attachment(b"\x00" * 3, maintype="application", subtype="octet-stream")
    msg.add_attachment(b"img", maintype="image", subtype="png", disposition="inline", filename="logo.png")
    return msg


def test_plain_part_is_preferred_and_attachments_listed() -> None:
    """The text/plain alternative is shown; attachments follow with name and size."""
    assert render(parse(_mixed().as_bytes())) == (
        "Plain body.\n\nAttachments:\n- report.pdf (3.9 KB)\n"
        "- (unnamed application/octet-stream) (3 bytes)\n- logo.png (3 bytes)"
    )


def test_attachment_details() -> None:
    """Each attachment is reported with its decoded size and content type."""
    listed = attachments(parse(_mixed().as_bytes()))
    assert [(a.filename, a.content_type, a.size) for a in listed] == [
        ("report.pdf", "application/pdf", 4000),
        (None, "application/octet-stream", 3),
        ("logo.png", "image/png", 3),
    ]


def test_html_only_message_is_converted() -> None:
    """A message with only an HTML body is rendered as text."""
    msg = EmailMessage()
    msg.set_content("<p>Only <i>HTML</i> here.</p>", subtype="html")
    assert render(parse(msg.as_bytes())) == "Only HTML here."


def test_render_keeps_the_attachment_list_when_cutting() -> None:
    """A long body is cut so that the attachment list still fits within the limit."""
    msg = _mixed()
    msg.get_body(("plain",)).set_content("x " * 5000)  # type: ignore[union-attr]
    text = render(parse(msg.as_bytes()), max_chars=300)
    assert len(text) <= 300
    assert TRUNCATED + "\n\nAttachments:" in text and text.endswith("logo.png (3 bytes)")


def test_rfc2047_subject_is_decoded() -> None:
    """Encoded words in the subject are decoded to text."""
    assert subject(parse(_mixed().as_bytes())) == "Störung im Rechenzentrum"


def test_missing_subject_has_a_placeholder() -> None:
    """A message without a Subject gets "(no subject)"."""
    assert subject(parse(b"From: a@x.test\r\n\r\nbody\r\n")) == "(no subject)"


def test_unknown_charset_does_not_fail() -> None:
    """A body in an unknown charset is shown with replacement characters, not an error."""
    raw = b"Subject: x\r\nContent-Type: text/plain; charset=x-martian\r\n\r\nhello \xff\r\n"
    assert render(parse(raw)) == "hello \ufffd"


def test_folded_header_is_one_line() -> None:
    """A folded header value comes back on one line, and headers() lower-cases names."""
    msg = parse(b"Subject: a long\r\n  folded subject\r\nX-Alert-Level: P1\r\n\r\n")
    assert header(msg, "subject") == "a long folded subject"
    assert headers(msg)["x-alert-level"] == "P1"


def test_importance_from_the_priority_headers() -> None:
    """Importance, X-Priority, Priority and X-MSMail-Priority normalise to high, normal or low."""
    assert importance({"x-priority": "1 (Highest)"}) == "high"
    assert importance({"importance": "Low", "x-priority": "1"}) == "low"
    assert importance({"priority": "non-urgent"}) == "low"
    assert importance({"x-msmail-priority": "High"}) == "high"
    assert importance({"x-priority": "garbage"}) == "normal"
    assert importance({}) == "normal"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.integers(min_value=20, max_value=500))
def test_any_bytes_render_within_the_limit(raw: bytes, max_chars: int) -> None:
    """Whatever bytes arrive, rendering does not raise and respects the length cap."""
    message = parse(raw)
    assert len(render(message, max_chars=max_chars)) <= max_chars
    subject(message)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=1000))
def test_any_html_converts(markup: str) -> None:
    """Arbitrary (broken) markup converts without raising."""
    html_to_text(markup)
