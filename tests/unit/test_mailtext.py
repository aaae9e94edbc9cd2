"""Email messages rendered as readable text for the backup channels."""

from __future__ import annotations

import base64
import time
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.intake.mailtext import (
    FORWARDED,
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
    assert trim_reply(text, reply=True) == "Fixed, thanks."


def test_outlook_original_message_is_trimmed() -> None:
    """Outlook's "-----Original Message-----" and "From:/Sent:" blocks start the quoted original."""
    assert trim_reply("Done.\n-----Original Message-----\nFrom: Bob\nold", reply=True) == "Done."
    assert trim_reply("Done.\n\nFrom: Bob Smith\nSent: Monday\nTo: ops\n\nold", reply=True) == "Done."


def test_from_line_in_the_body_is_not_a_reply_header() -> None:
    """A "From:" line without a "Sent:" after it is content, not the start of a quote."""
    assert trim_reply("Alert\nFrom: web-3\nLoad 12") == "Alert\nFrom: web-3\nLoad 12"


def test_signature_is_trimmed() -> None:
    """Everything after the "-- " separator (RFC 3676) is dropped."""
    assert trim_reply("Backup failed.\n-- \nThe backup robot\nhttps://robot.example") == "Backup failed."


def test_fully_quoted_text_is_kept() -> None:
    """A message that is nothing but quotes keeps them rather than becoming empty."""
    assert trim_reply("> forwarded alert\n> details") == "> forwarded alert\n> details"


def _mail(body: str, subject: str = "Disk full on db-1", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return parse(msg.as_bytes())


QUOTED_REPLY = "Fixed.\n\nOn Mon, 1 Jan 2024 at 10:00, Bob <bob@example.com> wrote:\n> is it down?"


def test_bare_dashes_in_machine_mail_are_content() -> None:
    """A bare "--" between a job's message and its traceback is not a signature outside a reply."""
    body = 'Job failed\n--\nTraceback (most recent call last):\n  File "job.py", line 3\nValueError: x'
    assert render(_mail(body)) == body


def test_underscore_rule_in_machine_mail_is_content() -> None:
    """An underscore rule under a heading is not Outlook's reply header outside a reply."""
    body = "Summary\n" + "_" * 30 + "\nhost db-1 down"
    assert render(_mail(body)) == body


def test_quote_like_line_in_machine_mail_is_content() -> None:
    """A line starting with ">" (a threshold) is kept outside a reply."""
    body = "CPU alert\n> 95% for 5 minutes on web-2"
    assert render(_mail(body)) == body


def test_from_and_date_lines_in_machine_mail_are_content() -> None:
    """A "From:" line followed by "Date:" in the body does not cut what follows outside a reply."""
    body = "Report\nFrom: spoof@x\nDate: Mon, 1 Jan 2024\nrow 1: db-1 down"
    assert render(_mail(body)) == body


def test_rfc3676_signature_is_trimmed_in_machine_mail() -> None:
    """The "-- " separator (with its space) starts the signature in any mail."""
    assert render(_mail("Backup failed.\n-- \nThe backup robot")) == "Backup failed."


def test_html_signature_is_trimmed_in_machine_mail() -> None:
    """An HTML body's "-- " line keeps its space through conversion, so its signature goes too."""
    msg = EmailMessage()
    msg.set_content("<p>Backup failed.</p>-- <br>The backup robot", subtype="html")
    assert render(parse(msg.as_bytes())) == "Backup failed."


@pytest.mark.parametrize("name", ["in_reply_to", "references"])
def test_reply_is_known_by_its_headers(name: str) -> None:
    """In-Reply-To or References make a message a reply: its quoted original is dropped."""
    assert render(_mail(QUOTED_REPLY, **{name: "<a@example.com>"})) == "Fixed."


@pytest.mark.parametrize(
    "subject",
    [
        *("Re: x", "RE: RE: x", "Aw: x", "AW: Re: x", "Sv: x", "Antw: x", "Réf. : x", "RÉF: x"),
        *("Re[2]: x", "re^3: x", "[ops] Re: x", "VS: x", "Odp: x", "回复\N{FULLWIDTH COLON}x"),
    ],
)
def test_reply_is_known_by_its_subject_prefix(subject: str) -> None:
    """A reply prefix, in any case, language, repeated or numbered, makes a message a reply."""
    assert render(_mail(QUOTED_REPLY, subject)) == "Fixed."


@pytest.mark.parametrize("subject", ["Fwd: Re: x", "Reboot done", "Resolved: db-1", "Report: x", "R: x"])
def test_other_subjects_are_not_replies(subject: str) -> None:
    """A forward, or a word that merely starts like a prefix, leaves the quote-like lines alone."""
    assert render(_mail(QUOTED_REPLY, subject)) == QUOTED_REPLY


def test_bare_dashes_in_a_reply_start_the_signature() -> None:
    """In a reply, "--" without its space still separates the signature."""
    assert render(_mail("Thanks.\n--\nAlice\nOps team", "Re: disk")) == "Thanks."


def test_signature_separator_before_a_traceback_is_kept() -> None:
    """A separator followed by a traceback or log lines is content, even in a reply."""
    text = 'Still failing\n--\n\nTraceback (most recent call last):\n  File "job.py", line 3'
    assert trim_reply(text, reply=True) == text
    logged = "Still failing\n-- \n2024-01-01 10:00:00 ERROR disk full"
    assert trim_reply(logged, reply=True) == logged


def test_wrapped_gmail_attribution_starts_the_quote() -> None:
    """Gmail's "On … wrote:" wrapped over two lines is the reply header."""
    body = "Fixed.\n\nOn Mon, 1 Jan 2024 at 10:00, Alice <\nalice@example.com> wrote:\n> is it down?\n> db-1"
    assert render(_mail(body, "Re: db-1")) == "Fixed."


def _forward(inner: EmailMessage, note: str = "FYI see below") -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = "Fwd: " + str(inner["Subject"])
    msg.set_content(note)
    msg.add_attachment(inner)
    return msg


def _original(body: str = "db-1 is down", **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Monitor <mon@example.com>"
    msg["Date"] = "Mon, 01 Jan 2024 10:00:00 +0000"
    msg["Subject"] = "db down"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def test_forwarded_message_follows_the_text() -> None:
    """An attached message/rfc822 is shown after the text, under a heading with its From/Date/Subject."""
    assert render(parse(_forward(_original()).as_bytes())) == (
        f"FYI see below\n\n{FORWARDED}\nFrom: Monitor <mon@example.com>\n"
        "Date: Mon, 01 Jan 2024 10:00:00 +0000\nSubject: db down\n\ndb-1 is down"
    )


def test_forwarded_message_is_trimmed_by_its_own_headers() -> None:
    """A forwarded reply loses its quoted original; a forwarded alert keeps its quote-like lines."""
    reply = _original("Fixed.\n\nOn Mon, Bob wrote:\n> down?", in_reply_to="<a@example.com>")
    assert render(parse(_forward(reply).as_bytes())).endswith("Subject: db down\n\nFixed.")
    alert = _original("CPU alert\n> 95% for 5 minutes on web-2")
    assert render(parse(_forward(alert).as_bytes())).endswith("\n\nCPU alert\n> 95% for 5 minutes on web-2")


def test_attachments_of_a_forwarded_message_are_listed() -> None:
    """Files attached to the forwarded message are listed with the others, its body is not."""
    inner = _original()
    inner.add_attachment(b"x" * 10, maintype="text", subtype="plain", filename="db.log")
    outer = _forward(inner)
    outer.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="report.pdf")
    assert render(parse(outer.as_bytes())).endswith(
        "db-1 is down\n\nAttachments:\n- db.log (10 bytes)\n- report.pdf (4 bytes)"
    )


def test_forwarded_messages_are_shown_only_so_deep() -> None:
    """Past three levels a forward shows only its headers, and what it holds is neither shown nor listed."""
    msg = EmailMessage()
    for level in range(6):
        outer = EmailMessage()
        outer["Subject"] = f"level {level}"
        outer.set_content(f"body {level}")
        if level:
            outer.add_attachment(msg)
        outer.add_attachment(b"x", maintype="text", subtype="plain", filename=f"{level}.txt")
        msg = outer
    text = render(parse(msg.as_bytes()))
    assert [n for n in range(6) if f"body {n}" in text] == [2, 3, 4, 5]
    assert text.count(FORWARDED) == 4 and "Subject: level 1\n(nested too deeply to show)" in text
    assert text.endswith(
        "Attachments:\n- 2.txt (1 bytes)\n- 3.txt (1 bytes)\n- 4.txt (1 bytes)\n- 5.txt (1 bytes)"
    )


def test_forwarded_message_is_cut_to_the_limit() -> None:
    """A long forwarded message counts against the length cap like the text before it."""
    text = render(parse(_forward(_original("y " * 5000)).as_bytes()), max_chars=300)
    assert len(text) <= 300
    assert FORWARDED in text and text.endswith(TRUNCATED)


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


def test_every_inline_text_part_is_shown_in_order() -> None:
    """A report whose errors are in a second inline part (a cron job's, a backup tool's): both
    parts, in order, and neither listed as an attachment."""
    raw = (
        b"Subject: backup\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nThe nightly backup failed, see below.\r\n"
        b"--b\r\nContent-Type: text/plain\r\nContent-Disposition: inline\r\n\r\n"
        b"ERROR: disk full on /var/backups\r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n<p>Run <b>42</b> aborted.</p>\r\n"
        b"--b\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename=run.csv\r\n\r\n"
        b"a,b\r\n--b--\r\n"
    )
    assert render(parse(raw)) == (
        "The nightly backup failed, see below.\n\nERROR: disk full on /var/backups\n\nRun 42 aborted."
        "\n\nAttachments:\n- run.csv (3 bytes)"
    )


def test_a_blank_plain_alternative_gives_way_to_the_html_one() -> None:
    """Some senders fill only the HTML alternative: the empty plain one is not the body."""
    msg = EmailMessage()
    msg.set_content("\n")
    msg.add_alternative("<p>Database <b>down</b>.</p>", subtype="html")
    assert render(parse(msg.as_bytes())) == "Database down."


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
    """A body in a charset Python does not know is read as UTF-8, else Windows-1252: no error."""
    raw = b"Subject: x\r\nContent-Type: text/plain; charset=x-martian\r\n\r\nhello \xff\r\n"
    assert render(parse(raw)) == "hello \xff"


@pytest.mark.parametrize(
    ("charset", "body", "shown"),
    [
        (None, "Zähler 5 €".encode(), "Zähler 5 €"),  # a script writing UTF-8, no charset
        ("us-ascii", "Zähler 5 €".encode(), "Zähler 5 €"),  # the same, labelled ASCII
        ("us-ascii", b"Z\xe4hler", "Zähler"),  # Latin-1 bytes labelled ASCII
        ("iso-8859-1", b"\x93quoted\x94 \x80 5", "\u201cquoted\u201d € 5"),  # Windows-1252 labelled Latin-1
        ("iso-8859-15", b"\xa4 5", "€ 5"),  # a label that is right is followed
    ],
)
def test_mislabelled_charsets_are_read_as_senders_meant(charset: str | None, body: bytes, shown: str) -> None:
    label = f"; charset={charset}" if charset else ""
    raw = b"Subject: x\r\nContent-Type: text/plain" + label.encode() + b"\r\n\r\n" + body + b"\r\n"
    assert render(parse(raw)) == shown


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


@pytest.mark.parametrize(
    "markup",
    [
        "<html><head><meta charset=utf-8><title>Alert</title><body><p>Backup FAILED on db-1</p></body>",
        "<html><head><style>p{color:red}</style><body><p>Backup FAILED on db-1</p>",
        "<head><title>Alert</title><script>track()</script>Backup FAILED on db-1",
    ],
)
def test_html_without_its_closing_head_tag_shows_its_body(markup: str) -> None:
    """``</head>`` may be omitted (HTML5; minifiers drop it): the body ends the head, as in a browser,
    and only the title, style and script stay out."""
    assert html_to_text(markup) == "Backup FAILED on db-1"


def test_an_unknown_charset_in_a_header_the_parser_rejects_does_not_raise() -> None:
    """An encoded word in a charset Python lacks, in a To: the stdlib's parser fails on, is decoded
    by the fallback (it raised LookupError, and the client got 451 for ever)."""
    raw = b"To: =?x-martian?B?4eTp?= <m@example.com>, <\r\nSubject: a\r\n\r\nx\r\n"
    assert headers(parse(raw))["to"] == "\u00e1\u00e4\u00e9 <m@example.com>, <"


@pytest.mark.parametrize(
    ("label", "text", "codec"),
    [
        ("gb2312", "朱镕基 服务器宕机", "gbk"),
        ("x-gbk", "服务器宕机", "gbk"),
        ("windows-874", "ดิสก์เต็ม", "cp874"),
        ("iso-8859-8-i", "הדיסק מלא", "iso-8859-8"),
        ("x-sjis", "ディスク満杯", "shift_jis"),
        ("ks_c_5601-1987", "똠방 디스크 가득", "cp949"),  # 똠: in Windows' Korean, not in EUC-KR
    ],
)
def test_charset_labels_real_mail_uses_are_decoded_as_meant(label: str, text: str, codec: str) -> None:
    """Labels Python lacks or reads too narrowly (WHATWG Encoding Standard aliases) give the text sent."""
    head = f"Subject: =?{label}?B?{base64.b64encode(text.encode(codec)).decode()}?=\r\n"
    raw = f"{head}Content-Type: text/plain; charset={label}\r\n\r\n".encode() + text.encode(codec) + b"\r\n"
    message = parse(raw)
    assert (render(message), subject(message)) == (text, text)


def test_an_attachment_only_message_starts_with_its_list() -> None:
    """A scanner's mail has no text: the rendering is the attachment list, no blank lines before it."""
    msg = EmailMessage()
    msg["Subject"] = "Scan"
    msg.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="scan.pdf")
    assert render(parse(msg.as_bytes())) == "Attachments:\n- scan.pdf (4 bytes)"


def test_unclosed_blockquotes_do_not_multiply_the_text() -> None:
    """Thousands of unclosed <blockquote> tags give each line a few quote marks, not thousands
    (the text, and the daemon's memory, grew with depth times lines: gigabytes from a megabyte)."""
    text = html_to_text("<blockquote>" * 3000 + "<br>x" * 3000)
    assert len(text) < 100_000
    assert text.splitlines()[-1] == "> " * 8 + "x"


def test_nested_links_render_in_linear_time() -> None:
    """Unclosed <a> tags are ended by the next one, as a browser does, instead of recording each
    piece of text once per open link (minutes of a worker thread for a crafted message)."""
    started = time.monotonic()
    text = html_to_text('<a href="https://x.test/">' * 20_000 + "x<b>" * 20_000)
    assert time.monotonic() - started < 5
    assert text.endswith("x" * 100)
    assert html_to_text('<a href="https://a.test/">a<a href="https://b.test/">b</a>') == (
        "a (https://a.test/)b (https://b.test/)"
    )


def test_many_distinct_headers_are_read_in_linear_time() -> None:
    """A message with tens of thousands of header names is read in one pass (each looked up anew
    took time quadratic in their number: minutes of a worker thread)."""
    raw = b"".join(b"X-H%d: v\r\n" % i for i in range(20_000)) + b"Subject: hi\r\n\r\nbody\r\n"
    started = time.monotonic()
    values = headers(parse(raw))
    assert time.monotonic() - started < 10
    assert values["subject"] == "hi" and values["x-h19999"] == "v"


def test_a_huge_header_is_decoded_in_time() -> None:
    """Only a header's first 16 KiB are decoded: the email package's parser takes time quadratic
    in a value's length (minutes for a megabyte Subject)."""
    raw = b"Subject: Disk full " + b"a " * 500_000 + b"\r\n\r\nbody\r\n"
    started = time.monotonic()
    assert subject(parse(raw)).startswith("Disk full a a")
    assert time.monotonic() - started < 10


def test_an_unencoded_latin1_header_is_read_as_text() -> None:
    """A header in raw 8-bit Windows-1252/Latin-1 (legacy applications), not valid UTF-8, is read
    as the body would be, so rules and readers see "Störung", not replacement characters."""
    message = parse(b"Subject: St\xf6rung: Datenbank \x96 down\r\nX-Team: B\xfcro\r\n\r\nbody\r\n")
    assert subject(message) == "Störung: Datenbank \u2013 down"
    assert headers(message)["x-team"] == "Büro"
    assert subject(parse("Subject: Störung\r\n\r\nbody\r\n".encode())) == "Störung"


@pytest.mark.parametrize(
    "padding",
    ["&#847; &zwnj; &nbsp; " * 90, "&zwnj;&nbsp;" * 90, "&#8199;&#65279;&#847; " * 90, "&#8203; " * 90],
)
def test_preheader_padding_of_email_templates_is_not_shown(padding: str) -> None:
    """The invisible characters templates repeat after a preheader (to keep the body out of a
    mail client's preview) are dropped: they filled an SMS or a Slack excerpt with nothing."""
    markup = f'<div style="display:none">Build failed{padding}</div><h2>Job failed</h2><p>Build #42.</p>'
    assert html_to_text(markup) == "Build failed\n\nJob failed\n\nBuild #42."


def test_joiners_between_letters_and_emoji_are_kept() -> None:
    """Zero-width (non-)joiners that shape a script or an emoji sequence are text, not padding."""
    text = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 \U0001f468\u200d\U0001f4bb"
    assert html_to_text(f"<p>{text}</p>") == text
