"""EmailChannel against a real SMTP server on loopback."""

from __future__ import annotations

import email
import email.policy
import smtplib
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from channels.base import ChannelError, OutboundMessage, Refusal
from channels.email import EmailChannel, SmtpSettings
from tests.servers import SmtpServer

CREATED_AT = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


def _channel(server: SmtpServer, **settings: object) -> EmailChannel:
    smtp = SmtpSettings("127.0.0.1", server.port, starttls=False, timeout_s=5.0, **settings)  # type: ignore[arg-type]
    return EmailChannel("email", smtp, mail_from="backchannel@example.test", default_to=["ops@example.test"])


def _message(**changes: object) -> OutboundMessage:
    fields: dict[str, object] = {
        "notification_id": "n-42",
        "idempotency_key": "k-42",
        "severity": "critical",
        "subject": "Database down",
        "body": "db1 is not answering",
        "created_at": CREATED_AT,
        "source": "alertmanager",
        "recipients": ("oncall@example.test",),
        "labels": {"host": "db1", "team": "data"},
    }
    return OutboundMessage(**{**fields, **changes})  # type: ignore[arg-type]


def _parse(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


async def test_delivers_with_headers_and_stable_message_id(smtp: SmtpServer) -> None:
    """An accepted send carries the subject, idempotent Message-ID and backchannel headers."""
    receipt = await _channel(smtp).send(_message())
    [mail] = await smtp.wait_for_async(1)
    parsed = _parse(mail.data)
    assert receipt.channel == "email"
    assert receipt.detail.startswith("250")
    assert mail.mail_from == "backchannel@example.test"
    assert mail.rcpt_tos == ("oncall@example.test",)
    assert parsed["Subject"] == "[CRITICAL] Database down"
    assert parsed["Message-ID"] == "<n-42@backchannel>"
    assert parsed["X-Backchannel-Id"] == "n-42"
    assert parsed["X-Backchannel-Severity"] == "critical"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["To"] == "oncall@example.test"
    assert parsed["Date"].datetime == CREATED_AT


async def test_body_names_source_labels_time_and_id(smtp: SmtpServer) -> None:
    """The text body carries the context a reader needs: source, labels, created_at, id."""
    await _channel(smtp).send(_message(subject="Ünïcode ✓", body="naïve body"))
    [mail] = await smtp.wait_for_async(1)
    parsed = _parse(mail.data)
    part = parsed.get_body(("plain",))
    assert part is not None
    text = part.get_content()
    assert parsed["Subject"] == "[CRITICAL] Ünïcode ✓"
    for expected in ("naïve body", "alertmanager", "host=db1", "team=data", "2024-05-01T12:30", "n-42"):
        assert expected in text


async def test_retry_repeats_the_same_message_id(smtp: SmtpServer) -> None:
    """A second attempt of one notification has the same Message-ID (email's idempotency key)."""
    channel = _channel(smtp)
    await channel.send(_message())
    await channel.send(_message(attempt=2))
    first, second = await smtp.wait_for_async(2)
    assert _parse(first.data)["Message-ID"] == _parse(second.data)["Message-ID"]


async def test_default_recipients_when_message_has_none(smtp: SmtpServer) -> None:
    """Without recipients on the message, default_to is used."""
    await _channel(smtp).send(_message(recipients=()))
    [mail] = await smtp.wait_for_async(1)
    assert mail.rcpt_tos == ("ops@example.test",)


async def test_no_recipients_at_all_is_permanent(smtp: SmtpServer) -> None:
    """With neither message recipients nor default_to there is nothing to retry."""
    channel = EmailChannel(
        "email", SmtpSettings("127.0.0.1", smtp.port, starttls=False), mail_from="b@x.test"
    )
    with pytest.raises(ChannelError) as info:
        await channel.send(_message(recipients=()))
    assert info.value.permanent
    assert not info.value.service_fault


async def test_header_injection_in_recipient_is_permanent(smtp: SmtpServer) -> None:
    """A recipient carrying CRLF cannot be sent, and nothing reaches the server."""
    with pytest.raises(ChannelError) as info:
        await _channel(smtp).send(_message(recipients=("a@example.test\r\nBcc: evil@example.test",)))
    assert info.value.permanent
    assert smtp.messages == []


async def test_raw_message_is_relayed_byte_identical(smtp: SmtpServer) -> None:
    """Original SMTP-intake bytes go out unchanged, with the original envelope sender."""
    raw = (
        b"From: app@example.test\r\nTo: oncall@example.test\r\nSubject: original\r\n"
        b"Message-ID: <orig-1@app>\r\nX-Custom: kept\r\n\r\nline one\r\n.leading dot\r\nline three\r\n"
    )
    await _channel(smtp).send(_message(raw=raw, mail_from="app@example.test"))
    [mail] = await smtp.wait_for_async(1)
    assert mail.data == raw
    assert mail.mail_from == "app@example.test"


async def test_the_null_sender_is_relayed_as_the_null_sender(smtp: SmtpServer) -> None:
    """A bounce or receipt relayed from the smart host goes out as MAIL FROM:<>, not as ours."""
    raw = b"From: MAILER-DAEMON@example.test\r\nSubject: Undelivered\r\n\r\nbounced\r\n"
    await _channel(smtp).send(_message(raw=raw, mail_from=""))
    [mail] = await smtp.wait_for_async(1)
    assert (mail.mail_from, mail.data) == ("<>", raw)  # aiosmtpd records the null sender so


async def test_addresses_beyond_ascii_are_relayed_with_smtputf8(smtp: SmtpServer) -> None:
    """A sender or recipient not in ASCII needs SMTPUTF8 (RFC 6531), which the server offers."""
    raw = "From: jürgen@example.test\r\nSubject: Störung\r\n\r\nDatenbank weg\r\n".encode()
    await _channel(smtp).send(
        _message(raw=raw, mail_from="jürgen@example.test", recipients=("öps@example.test",))
    )
    [mail] = await smtp.wait_for_async(1)
    assert (mail.mail_from, mail.rcpt_tos, mail.data) == ("jürgen@example.test", ("öps@example.test",), raw)


async def test_an_8bit_message_is_declared_as_its_client_declared_it(smtp: SmtpServer) -> None:
    """ASCII addresses, a UTF-8 header and an 8-bit body: SMTPUTF8 (RFC 6532) and BODY=8BITMIME
    (RFC 6152), which the server offers, as the smart host's client sent them."""
    raw = "From: app@example.test\r\nSubject: Störung\r\n\r\nDatenbank weg: ä\r\n".encode()
    await _channel(smtp).send(_message(raw=raw, mail_from="app@example.test"))
    [mail] = await smtp.wait_for_async(1)
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(mail.mail_options)
    assert mail.data == raw


async def test_an_ascii_header_with_an_8bit_body_needs_no_smtputf8(smtp: SmtpServer) -> None:
    raw = b"From: app@example.test\r\nSubject: latin-1\r\n\r\ncaf\xe9\r\n"
    await _channel(smtp).send(_message(raw=raw, mail_from="app@example.test"))
    [mail] = await smtp.wait_for_async(1)
    assert "BODY=8BITMIME" in mail.mail_options and "SMTPUTF8" not in mail.mail_options


async def test_a_utf8_header_to_a_server_without_smtputf8_goes_as_it_came(smtp: SmtpServer) -> None:
    """Only an address needs the extension: a header goes undeclared to a server without it, as
    before, rather than failing the message."""
    smtp.without_smtputf8()
    raw = "From: app@example.test\r\nSubject: Störung\r\n\r\nx\r\n".encode()
    await _channel(smtp).send(_message(raw=raw, mail_from="app@example.test"))
    [mail] = await smtp.wait_for_async(1)
    assert "SMTPUTF8" not in mail.mail_options and mail.data == raw


async def test_a_relayed_message_refused_at_mail_from_is_not_a_provider_fault(smtp: SmtpServer) -> None:
    """552 5.3.4 to MAIL FROM (too big for the provider) or 550 5.7.1 (a sender it will not send
    for) judges the relayed message, not the provider: permanent, no health signal."""
    smtp.reply(552, "5.3.4 Message size exceeds fixed limit", stage="mail")
    with pytest.raises(ChannelError) as caught:
        await _channel(smtp).send(_message(raw=b"Subject: x\r\n\r\ny\r\n", mail_from="app@example.test"))
    assert (caught.value.permanent, caught.value.service_fault) == (True, False)
    assert [r.code for r in caught.value.refused] == [552]


async def test_our_own_sender_refused_at_mail_from_is_a_provider_fault(smtp: SmtpServer) -> None:
    """The same reply to a notification of ours says the account cannot send: a fault."""
    smtp.reply(550, "5.7.1 Client does not have permissions to send as this sender", stage="mail")
    with pytest.raises(ChannelError) as caught:
        await _channel(smtp).send(_message())
    assert (caught.value.permanent, caught.value.service_fault) == (True, True)


async def test_a_server_without_smtputf8_fails_such_a_message_not_the_provider(smtp: SmtpServer) -> None:
    """The server works; it cannot take this one message: permanent, and no fault of the provider."""
    smtp.without_smtputf8()
    with pytest.raises(ChannelError) as caught:
        await _channel(smtp).send(_message(raw=b"Subject: x\r\n\r\ny\r\n", mail_from="jürgen@example.test"))
    assert (caught.value.permanent, caught.value.service_fault) == (True, False)
    assert "SMTPUTF8" in str(caught.value)
    # found here, not replied by the server: each recipient, for its sender's report (RFC 6531 §3.5)
    [refusal] = caught.value.refused
    assert (refusal.recipient, refusal.diagnostic) == ("oncall@example.test", "x-backchannel")
    assert refusal.reply == f"5.6.7 SMTPUTF8 is required, but was not offered by 127.0.0.1:{smtp.port}"


async def test_refused_port_is_transient_service_fault(smtp: SmtpServer) -> None:
    """A stopped server (connection refused) is a transient fault of the service."""
    smtp.stop()
    with pytest.raises(ChannelError) as info:
        await _channel(smtp).send(_message())
    assert not info.value.permanent
    assert info.value.service_fault


async def test_a_name_that_does_not_resolve_is_not_a_provider_fault() -> None:
    """Our resolver failing (a name that does not resolve) is our network, as the SMTP check reads
    it (UNKNOWN): retried and kept queued as a service fault, but marked local, so it is not fed
    to health tracking against the provider."""
    smtp = SmtpSettings("smtp.does-not-resolve.invalid", 587, starttls=False, timeout_s=5.0)
    channel = EmailChannel(
        "email", smtp, mail_from="backchannel@example.test", default_to=["ops@example.test"]
    )
    with pytest.raises(ChannelError) as info:
        await channel.send(_message())
    assert (info.value.permanent, info.value.service_fault, info.value.local) == (False, True, True)


async def test_server_back_on_same_port_delivers_again(smtp: SmtpServer) -> None:
    """After stop() and start() the same channel delivers to the same port."""
    port = smtp.port
    smtp.stop()
    smtp.start()
    assert smtp.port == port
    await _channel(smtp).send(_message())
    await smtp.wait_for_async(1)


@pytest.mark.parametrize("stage", ["connect", "mail", "rcpt", "data"])
async def test_421_is_transient_service_fault(smtp: SmtpServer, stage: str) -> None:
    """421 at any stage means the service is unavailable for now."""
    smtp.reply(421, "4.3.2 Service shutting down", stage=stage)  # type: ignore[arg-type]
    with pytest.raises(ChannelError) as info:
        await _channel(smtp).send(_message())
    assert not info.value.permanent
    assert info.value.service_fault
    assert "421" in str(info.value)


async def test_451_on_data_is_transient(smtp: SmtpServer) -> None:
    """A 4xx to DATA (local error in processing) is transient."""
    smtp.reply(451, "4.3.0 Local error", stage="data")
    with pytest.raises(ChannelError) as info:
        await _channel(smtp).send(_message())
    assert not info.value.permanent


@pytest.mark.parametrize(
    ("reply", "providers_fault"),
    [
        ("452 4.2.2 Mailbox full", False),
        ("450 4.2.1 Mailbox busy", False),
        ("451 4.1.8 Sender domain does not resolve for now", False),
        ("452 4.5.3 Too many recipients", False),
        ("451 4.7.500 Server busy. Please try again later", True),
        ("451 4.3.0 Local error", True),
        ("450 Requested action not taken", True),  # no enhanced code: it may be the server
        ("452 5.2.2 Mailbox full", True),  # the class disagrees with the code: not to be trusted
    ],
)
async def test_4xx_to_every_recipient_counts_against_the_provider_unless_about_the_recipient(
    smtp: SmtpServer, reply: str, providers_fault: bool
) -> None:
    """A full or busy mailbox retried all day says nothing of the provider (RFC 3463 x.1/x.2/4.5.3)."""
    code, text = reply.split(" ", 1)
    smtp.refuse("full@example.test", code=int(code), text=text)
    with pytest.raises(ChannelError) as info:
        await _channel(smtp).send(_message(recipients=("full@example.test",)))
    assert not info.value.permanent
    assert info.value.service_fault is providers_fault
    assert info.value.later is not providers_fault  # kept queued either way on the primary channel
    assert [r.reply for r in info.value.refused] == [reply]


@pytest.mark.parametrize("relayed", [True, False])
async def test_every_recipient_refused_some_for_now(smtp: SmtpServer, relayed: bool) -> None:
    """550 and 452 4.2.2, none taken: a relayed message fails for good (a follow-up retries the
    second alone, the sender hears of the first at once); a notification of ours is retried whole."""
    smtp.refuse("gone@example.test")
    smtp.refuse("full@example.test", code=452, text="4.2.2 Mailbox full")
    raw = b"From: app@example.test\r\nSubject: job\r\n\r\nfailed\r\n" if relayed else None
    message = _message(recipients=("gone@example.test", "full@example.test"), raw=raw)
    with pytest.raises(ChannelError) as info:
        await _channel(smtp).send(message)
    assert info.value.permanent is relayed
    assert not info.value.service_fault
    assert [(r.recipient, r.permanent) for r in info.value.refused] == [
        ("gone@example.test", True),
        ("full@example.test", False),
    ]


async def test_550_to_all_recipients_is_permanent_not_service_fault(smtp: SmtpServer) -> None:
    """Every recipient refused with 5xx is about this message, not the service."""
    smtp.reply(550, "5.1.1 No such user", stage="rcpt")
    with pytest.raises(ChannelError) as info:
        await _channel(smtp).send(_message(recipients=("a@example.test", "b@example.test")))
    assert info.value.permanent
    assert not info.value.service_fault
    assert "a@example.test" in str(info.value)


async def test_some_recipients_refused_is_delivered_naming_them(smtp: SmtpServer) -> None:
    """When at least one recipient is accepted the send is delivered; the receipt names the refused."""
    smtp.refuse("gone@example.test")
    receipt = await _channel(smtp).send(_message(recipients=("gone@example.test", "ok@example.test")))
    [mail] = await smtp.wait_for_async(1)
    assert mail.rcpt_tos == ("ok@example.test",)
    assert "gone@example.test" in receipt.detail


@pytest.mark.parametrize("stage", ["connect", "mail"])
async def test_5xx_outside_recipients_is_permanent_service_fault(smtp: SmtpServer, stage: str) -> None:
    """5xx to the greeting or MAIL FROM is permanent and blames the service."""
    smtp.reply(554, "5.3.0 Transaction failed", stage=stage)  # type: ignore[arg-type]
    with pytest.raises(ChannelError) as info:
        await _channel(smtp).send(_message())
    assert info.value.permanent
    assert info.value.service_fault


@pytest.mark.parametrize(
    "reply", [(554, "5.7.1 Message rejected as spam"), (552, "5.3.4 Message too big"), (500, "Line too long")]
)
async def test_5xx_to_the_message_is_permanent_and_not_the_providers_fault(
    smtp: SmtpServer, reply: tuple[int, str]
) -> None:
    """5xx at the end of DATA judges this message (content, size, a line too long): it fails alone,
    and one bad message does not count against the provider's health."""
    smtp.reply(*reply, stage="data")
    with pytest.raises(ChannelError) as info:
        await _channel(smtp).send(_message())
    assert (info.value.permanent, info.value.service_fault) == (True, False)
    assert f"refused the message: {reply[0]}" in str(info.value)


async def test_wrong_password_is_an_authentication_failure(smtp: SmtpServer) -> None:
    """535 to AUTH says the credentials need renewing: not permanent, a service fault."""
    smtp.require_auth("backchannel", "right")
    with pytest.raises(ChannelError) as info:
        await _channel(smtp, username="backchannel", password="wrong").send(_message())
    assert not info.value.permanent
    assert info.value.service_fault
    assert "authentication failed (credentials need renewing)" in str(info.value)
    assert "wrong" not in str(info.value)


async def test_missing_credentials_is_an_authentication_failure(smtp: SmtpServer) -> None:
    """530 (authentication required) maps like a failed login."""
    smtp.require_auth("backchannel", "right")
    with pytest.raises(ChannelError) as info:
        await _channel(smtp).send(_message())
    assert "authentication failed" in str(info.value)
    assert not info.value.permanent


async def test_right_credentials_deliver(smtp: SmtpServer) -> None:
    """With the right login the message is accepted and the server saw who logged in."""
    smtp.require_auth("backchannel", "right")
    await _channel(smtp, username="backchannel", password="right").send(_message())
    [mail] = await smtp.wait_for_async(1)
    assert mail.login == "backchannel"


async def test_starttls_required_but_not_offered_is_transient(smtp: SmtpServer) -> None:
    """A server that does not offer STARTTLS when we require it is a transient service fault."""
    smtp_settings = SmtpSettings("127.0.0.1", smtp.port, starttls=True, timeout_s=5.0)
    channel = EmailChannel("email", smtp_settings, mail_from="b@example.test")
    with pytest.raises(ChannelError) as info:
        await channel.send(_message())
    assert not info.value.permanent
    assert info.value.service_fault


async def test_implicit_tls_against_plaintext_server_is_transient(smtp: SmtpServer) -> None:
    """A TLS handshake failure (server speaks plaintext) is transient and a service fault."""
    channel = _channel(smtp, tls=True)
    with pytest.raises(ChannelError) as info:
        await channel.send(_message())
    assert not info.value.permanent
    assert info.value.service_fault


def test_smtp_server_serves_blocking_clients(smtp: SmtpServer) -> None:
    """The stand-in server works from sync code too (its loop runs in its own thread)."""
    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=5) as client:
        client.sendmail("a@example.test", ["b@example.test"], b"Subject: sync\r\n\r\nhello\r\n")
    [mail] = smtp.wait_for(1)
    assert mail.rcpt_tos == ("b@example.test",)


RAW = b"From: app@example.test\r\nSubject: relayed\r\nMessage-ID: <r-1@app>\r\n\r\nthe body\r\n"


def _relayed(*recipients: str) -> OutboundMessage:
    return _message(raw=RAW, mail_from="app@example.test", recipients=recipients)


async def test_a_recipient_refused_for_now_is_tried_again_in_a_new_transaction(smtp: SmtpServer) -> None:
    """A 4xx to one recipient while another took the message: retried at once in a second
    transaction of the same send, which delivers it; nobody gets the message twice."""
    smtp.refuse("busy@example.test", code=450, text="4.2.1 Mailbox busy", times=1)
    receipt = await _channel(smtp).send(_relayed("ok@example.test", "busy@example.test"))
    first, second = await smtp.wait_for_async(2)
    assert (first.rcpt_tos, second.rcpt_tos) == (("ok@example.test",), ("busy@example.test",))
    assert first.data == second.data == RAW
    assert receipt.refused == ()


async def test_a_recipient_still_refused_for_now_is_left_in_the_receipt(smtp: SmtpServer) -> None:
    """Refused again by the second transaction (greylisting): delivered to the others, and the
    receipt names it as refused for now, for a follow-up."""
    smtp.refuse("grey@example.test", code=451, text="4.7.1 Greylisted, try later")
    receipt = await _channel(smtp).send(_relayed("ok@example.test", "grey@example.test"))
    [mail] = await smtp.wait_for_async(1)
    assert mail.rcpt_tos == ("ok@example.test",)
    assert smtp.rcpt_attempts.snapshot().count("grey@example.test") == 2
    assert receipt.refused == (Refusal("grey@example.test", 451, "4.7.1 Greylisted, try later"),)
    assert not receipt.refused[0].permanent


async def test_recipients_beyond_the_servers_limit_go_in_further_transactions(smtp: SmtpServer) -> None:
    """452 4.5.3 past two recipients per message (RFC 5321 §4.5.3.1.10): five recipients take three
    transactions in one send, each recipient gets the message exactly once."""
    smtp.limit_recipients(2)
    recipients = tuple(f"r{i}@example.test" for i in range(5))
    receipt = await _channel(smtp).send(_relayed(*recipients))
    mails = await smtp.wait_for_async(3)
    assert [len(m.rcpt_tos) for m in mails] == [2, 2, 1]
    assert sorted(r for m in mails for r in m.rcpt_tos) == list(recipients)
    assert receipt.refused == ()


async def test_a_recipient_refused_for_good_is_named_permanent_in_the_receipt(smtp: SmtpServer) -> None:
    """A 5xx to one recipient is not tried again; the receipt names it with the server's reply."""
    smtp.refuse("gone@example.test")
    receipt = await _channel(smtp).send(_relayed("ok@example.test", "gone@example.test"))
    [mail] = await smtp.wait_for_async(1)
    assert mail.rcpt_tos == ("ok@example.test",)
    assert smtp.rcpt_attempts.snapshot().count("gone@example.test") == 1
    assert receipt.refused == (Refusal("gone@example.test", 550, "5.1.1 No such user"),)
    assert receipt.refused[0].permanent


@pytest.mark.parametrize("stage", ["mail", "data"])
async def test_a_refused_message_names_the_reply_for_every_recipient(smtp: SmtpServer, stage: str) -> None:
    """5xx to MAIL FROM or at the end of DATA refuses the message for all: the error carries the
    reply for each recipient, as a report to the sender needs it."""
    smtp.reply(554, "5.7.1 Rejected", stage=stage)  # type: ignore[arg-type]
    with pytest.raises(ChannelError) as info:
        await _channel(smtp).send(_relayed("a@example.test", "b@example.test"))
    assert info.value.refused == (
        Refusal("a@example.test", 554, "5.7.1 Rejected"),
        Refusal("b@example.test", 554, "5.7.1 Rejected"),
    )


async def test_without_smtputf8_the_ascii_recipients_still_get_the_message(smtp: SmtpServer) -> None:
    """A server without SMTPUTF8 cannot take an address beyond ASCII: the others still get the
    message, and the receipt names that one refused for good (5.6.7, found here) for a report."""
    smtp.without_smtputf8()
    receipt = await _channel(smtp).send(_relayed("ok@example.test", "jürgen@example.test"))
    [mail] = await smtp.wait_for_async(1)
    assert (mail.rcpt_tos, mail.data) == (("ok@example.test",), RAW)
    [refusal] = receipt.refused
    assert (refusal.recipient, refusal.permanent, refusal.diagnostic) == (
        "jürgen@example.test",
        True,
        "x-backchannel",
    )
    assert refusal.reply.startswith("5.6.7 SMTPUTF8 is required")


async def test_without_smtputf8_every_refusal_is_named(smtp: SmtpServer) -> None:
    """The ASCII recipient refused by the server, the other unsendable here: the error names both."""
    smtp.without_smtputf8()
    smtp.refuse("gone@example.test")
    with pytest.raises(ChannelError) as caught:
        await _channel(smtp).send(_relayed("gone@example.test", "jürgen@example.test"))
    assert caught.value.permanent
    assert sorted(r.recipient for r in caught.value.refused) == ["gone@example.test", "jürgen@example.test"]
