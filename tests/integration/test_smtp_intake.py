"""The SMTP smart host on 127.0.0.1:0 with real clients, a real Acceptor (with the store's health,
as the daemon wires it) and a real SQLite outbox."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import smtplib
import socket
import sqlite3
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import trustme
from pydantic import ValidationError

from daemon.clock import SystemClock
from daemon.core.model import Notification, Severity
from daemon.core.routing import Condition, Matcher, Route, route_for
from daemon.intake.accept import Acceptor
from daemon.intake.smtp import SmtpIntake
from daemon.intake.smtp_auth import Credentials, PasswordHash, hash_password
from daemon.intake.smtp_config import SmtpIntakeConfig
from daemon.intake.smtp_policy import UNREADABLE
from daemon.logs import configure_logging
from daemon.store.sqlite import SqliteStore
from daemon.store_health import StoreHealth
from tests.support import read_until_closed, stop_as_connections_arrive, until

ROUTES = (Route("all", Matcher(), ("email",), None),)
LOOPBACK = ["127.0.0.0/8"]
# a cheap scrypt cost keeps the tests fast; the format and the code path are the production ones
ALICE = {"name": "alice", "password_hash": hash_password("s3cret", ln=4, r=8, p=1)}
PDF = bytes(range(256)) * 40


@dataclass
class Harness:
    intake: SmtpIntake
    store: SqliteStore
    _writers: list[sqlite3.Connection] = field(default_factory=list)

    def client(self, **kwargs: Any) -> aiosmtplib.SMTP:
        options: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.intake.port, "start_tls": False}
        return aiosmtplib.SMTP(**(options | kwargs))

    async def send(self, raw: bytes, *, sender: str = "app@example.com", to: str = "ops@example.com") -> str:
        """Send one message without authenticating; the notification id from the 250 reply."""
        async with self.client() as client:
            _, reply = await client.sendmail(sender, [to], raw)
        return reply.split()[-1]

    async def stored(self, notification_id: str) -> Notification:
        view = await self.store.notification(notification_id)
        assert view is not None, "the 250 reply named a notification that is not in the store"
        return view.notification

    async def count(self) -> int:
        return sum((await self.store.queue()).notifications.values())

    async def read_only(self, on: bool) -> None:
        """Every write refused (SQLITE_READONLY, as on a file or mount made read-only), or taken
        again: on the writer thread's connection (taken by a job while it still writes, since its
        jobs begin a write) and on the event loop's (a lone accept's)."""
        if not self._writers:
            writer: sqlite3.Connection = await self.store._writer.run(lambda conn: conn, durable=False)
            inline = self.store._inline._conn
            assert inline is not None
            self._writers = [writer, inline]
        for conn in self._writers:
            conn.execute(f"PRAGMA query_only={int(on)}")


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    store = SqliteStore(tmp_path / "outbox.db")
    await store.open()
    intakes: list[SmtpIntake] = []

    async def make(**config: Any) -> Harness:
        settings = SmtpIntakeConfig.model_validate({"listen": "127.0.0.1:0", **config})
        health = StoreHealth(store)
        acceptor = Acceptor(store, lambda: ROUTES, SystemClock(), lambda: None, store_health=health)
        intake = SmtpIntake(settings, acceptor)
        await intake.start()
        intakes.append(intake)
        return Harness(intake, store)

    yield make
    for intake in intakes:
        await intake.stop(grace_s=5)
    await store.close()


def message(
    subject: str = "Disk full on db-1", body: str = "The disk is full.", **headers: str
) -> EmailMessage:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = "app@example.com"
    msg["To"] = "ops@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = headers.pop("message_id", "<m1@example.com>")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


async def test_multipart_message_is_stored_byte_identical(start: Start) -> None:
    """A multipart message with attachments is kept exactly as received, and rendered as text."""
    smtp = await start(allowed_networks=LOOPBACK)
    msg = message(body="Backup failed.\n\n-- \nThe backup robot")
    msg.add_alternative("<p>Backup <b>failed</b>.</p>", subtype="html")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="report.pdf")
    msg.add_attachment("a,b\n1,2\n", filename="data.csv")
    raw = msg.as_bytes()
    stored = await smtp.stored(await smtp.send(raw))
    assert stored.raw == raw
    assert stored.subject == "Disk full on db-1"
    assert stored.mail_from == "app@example.com"
    assert stored.recipients == ("ops@example.com",)
    assert stored.source == "smtp"
    assert stored.body.startswith("Backup failed.\n\nAttachments:")
    assert "- report.pdf (10.0 KB)" in stored.body and "- data.csv (10 bytes)" in stored.body
    assert stored.labels["smtp_from"] == "app@example.com"
    assert stored.labels["message_id"] == "<m1@example.com>"


async def test_long_lines_are_accepted_unchanged(start: Start) -> None:
    """Lines past RFC 5321's 1000 octets (generated HTML) are accepted and kept as they came."""
    smtp = await start(allowed_networks=LOOPBACK)
    raw = b"Subject: long\r\nContent-Type: text/html\r\n\r\n<p>" + b"x" * 20_000 + b"</p>\r\n"
    stored = await smtp.stored(await smtp.send(raw))
    assert stored.raw == raw


def sendmail_bytes(port: int, raw: bytes) -> dict[str, tuple[int, bytes]]:
    """Python's ``smtplib.sendmail`` with bytes: it doubles a dot after any LF (CRLF or bare) and
    sends the line ends as they are, so ``msg.as_bytes()`` goes out with bare LFs."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        return client.sendmail("app@example.com", ["ops@example.com"], raw)


async def test_message_with_bare_lf_line_ends_past_a_line_limit_is_accepted(start: Start) -> None:
    """A message with bare LF line ends longer than a line may be (sendmail(msg.as_bytes()) with an
    attachment) is taken as Postfix takes it, not refused as one long line."""
    smtp = await start(allowed_networks=LOOPBACK)
    msg = message(body="Nightly report attached.")
    msg.add_attachment(PDF * 6, maintype="application", subtype="pdf", filename="report.pdf")
    raw = msg.as_bytes(policy=SMTP_POLICY.clone(linesep="\n"))
    assert b"\r\n" not in raw and len(raw) > 64 * 1024
    assert await asyncio.to_thread(sendmail_bytes, smtp.intake.port, raw) == {}
    (view,) = await smtp.store.recent(1)
    assert view.notification.raw == raw + b"\r\n"  # smtplib ends the data with CRLF
    assert "- report.pdf (60.0 KB)" in view.notification.body


async def test_line_past_the_limit_is_refused(start: Start) -> None:
    """A line longer than 64 KiB, ended by CRLF or by a bare LF, gets 500 and nothing is kept."""
    smtp = await start(allowed_networks=LOOPBACK)
    for end in (b"\r\n", b"\n"):
        raw = b"Subject: long" + end + end + b"x" * (64 * 1024) + end + b"short" + end
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(sendmail_bytes, smtp.intake.port, raw)
        assert refused.value.smtp_code == 500
    assert await smtp.count() == 0


async def test_dots_doubled_after_a_bare_lf_are_taken_off(start: Start) -> None:
    """A line starting with a dot after a bare LF, which the client doubled (RFC 5321 section
    4.5.2), is kept with one dot, as after CRLF: the recipients see what was written."""
    smtp = await start(allowed_networks=LOOPBACK)
    raw = b"Subject: cron\nMessage-ID: <lf@example.com>\n\n./backup.sh failed\n..hidden\nend\n"
    assert await asyncio.to_thread(sendmail_bytes, smtp.intake.port, raw) == {}
    (view,) = await smtp.store.recent(1)
    assert view.notification.raw == raw + b"\r\n"
    assert view.notification.body == "./backup.sh failed\n..hidden\nend"


async def test_null_sender_is_kept_as_the_null_sender(start: Start) -> None:
    """A message with the null reverse-path (MAIL FROM:<>, a bounce or a receipt) is kept with an
    empty mail_from, which the relay sends as <> (None would have it sent as the provider's address)."""
    smtp = await start(allowed_networks=LOOPBACK)
    stored = await smtp.stored(await smtp.send(message().as_bytes(), sender=""))
    assert stored.mail_from == ""
    assert stored.labels["smtp_from"] == ""


async def test_message_is_in_the_store_when_the_client_gets_250(start: Start) -> None:
    """250 comes after the commit: the id it names is already in the outbox."""
    smtp = await start(allowed_networks=LOOPBACK)
    for i in range(5):
        nid = await smtp.send(message(f"n{i}", message_id=f"<n{i}@example.com>").as_bytes())
        assert (await smtp.stored(nid)).subject == f"n{i}"


async def test_client_outside_allowed_networks_must_authenticate(start: Start) -> None:
    """Without AUTH, a client from a network not on the list is refused at MAIL with 530."""
    smtp = await start(allowed_networks=["10.0.0.0/8"], users=[ALICE], allow_plaintext_auth_on_loopback=True)
    async with smtp.client() as client:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.sendmail("app@example.com", ["ops@example.com"], message().as_bytes())
    assert refused.value.code == 530
    assert await smtp.count() == 0


async def test_no_auth_and_no_networks_means_no_mail(start: Start) -> None:
    """With users only, an unauthenticated client (even on loopback) cannot send."""
    smtp = await start(users=[ALICE], allow_plaintext_auth_on_loopback=True)
    async with smtp.client() as client:
        await client.ehlo()
        response = await client.execute_command(b"MAIL", b"FROM:<app@example.com>")
    assert response.code == 530


@pytest.mark.parametrize(("user", "password"), [("alice", "wrong"), ("mallory", "s3cret")])
async def test_bad_credentials_are_refused(start: Start, user: str, password: str) -> None:
    """A wrong password and an unknown user both get 535, and nothing can be sent."""
    smtp = await start(users=[ALICE], allow_plaintext_auth_on_loopback=True)
    async with smtp.client() as client:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as failed:
            await client.login(user, password)
        assert failed.value.code == 535
        response = await client.execute_command(b"MAIL", b"FROM:<app@example.com>")
    assert response.code == 530


async def test_authenticated_client_sends(start: Start) -> None:
    """A user with the right password sends; the notification carries the login as a label."""
    smtp = await start(users=[ALICE], allow_plaintext_auth_on_loopback=True)
    async with smtp.client() as client:
        await client.login("alice", "s3cret")
        _, reply = await client.sendmail("app@example.com", ["ops@example.com"], message().as_bytes())
    stored = await smtp.stored(reply.split()[-1])
    assert stored.labels["smtp_user"] == "alice"


async def test_recipient_outside_allowed_domains_is_relaying_denied(start: Start) -> None:
    """RCPT to a domain not on the list is 550 5.7.1; allowed ones (and subdomains with *.) pass."""
    smtp = await start(allowed_networks=LOOPBACK, recipient_domains=["example.com", "*.corp.example"])
    async with smtp.client() as client:
        await client.ehlo()
        await client.mail("app@example.com")
        denied = await client.execute_command(b"RCPT", b"TO:<victim@elsewhere.test>")
        sub = await client.execute_command(b"RCPT", b"TO:<ops@eu.corp.example>")
        exact = await client.execute_command(b"RCPT", b"TO:<ops@EXAMPLE.com>")
    assert (denied.code, denied.message) == (550, "5.7.1 Relaying denied")
    assert (sub.code, exact.code) == (250, 250)


@pytest.mark.parametrize(
    ("allowed", "recipient", "code"),
    [
        ("straße.example", "ops@straße.example", 250),
        ("straße.example", "ops@xn--strae-oqa.example", 250),  # the same domain, in ASCII
        ("strasse.example", "ops@straße.example", 550),  # another domain (IDNA 2003 folded them)
        ("*.bücher.example", "ops@eu.BÜCHER.example", 250),
    ],
)
async def test_recipient_domains_compare_as_idna_2008(
    start: Start, allowed: str, recipient: str, code: int
) -> None:
    smtp = await start(allowed_networks=LOOPBACK, recipient_domains=[allowed])
    async with smtp.client() as client:
        await client.ehlo()
        await client.mail("app@example.com", options=["SMTPUTF8"])
        reply = await client.execute_command(b"RCPT", f"TO:<{recipient}>".encode())
    assert reply.code == code


async def test_submission_listener_requires_auth_even_from_allowed_networks(start: Start) -> None:
    """The port-587 listener wants AUTH from everyone; the main listener trusts the network."""
    smtp = await start(
        allowed_networks=LOOPBACK,
        users=[ALICE],
        allow_plaintext_auth_on_loopback=True,
        submission_listen="127.0.0.1:0",
    )
    assert smtp.intake.submission_port not in (None, smtp.intake.port)
    async with smtp.client(port=smtp.intake.submission_port) as client:
        await client.ehlo()
        refused = await client.execute_command(b"MAIL", b"FROM:<app@example.com>")
        await client.login("alice", "s3cret")
        await client.sendmail("app@example.com", ["ops@example.com"], message().as_bytes())
    assert refused.code == 530
    assert await smtp.count() == 1


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[dict[str, str], ssl.SSLContext]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(tmp_path / "cert.pem"), append=True)
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return {"cert_file": str(tmp_path / "cert.pem"), "key_file": str(tmp_path / "key.pem")}, client


async def test_auth_only_after_starttls(
    start: Start, tls_files: tuple[dict[str, str], ssl.SSLContext]
) -> None:
    """AUTH is refused in plaintext (538) and works after STARTTLS with the configured certificate."""
    tls, client_context = tls_files
    smtp = await start(users=[ALICE], tls=tls)
    async with smtp.client() as client:
        await client.ehlo()
        assert "starttls" in client.esmtp_extensions and "auth" not in client.esmtp_extensions
        plain = await client.execute_command(b"AUTH", b"PLAIN", b"AGFsaWNlAHMzY3JldA==")
        await client.starttls(tls_context=client_context)
        await client.login("alice", "s3cret")
        await client.sendmail("app@example.com", ["ops@example.com"], message().as_bytes())
    assert plain.code == 538
    assert await smtp.count() == 1


async def test_required_tls_refuses_mail_before_starttls(
    start: Start, tls_files: tuple[dict[str, str], ssl.SSLContext]
) -> None:
    """With tls.required, even a trusted network must STARTTLS before MAIL."""
    tls, client_context = tls_files
    smtp = await start(allowed_networks=LOOPBACK, tls=tls | {"required": True})
    async with smtp.client() as client:
        await client.ehlo()
        refused = await client.execute_command(b"MAIL", b"FROM:<app@example.com>")
        await client.starttls(tls_context=client_context)
        await client.sendmail("app@example.com", ["ops@example.com"], message().as_bytes())
    assert refused.code == 530
    assert await smtp.count() == 1


async def test_failed_commit_is_451_and_nothing_is_stored(start: Start) -> None:
    """When the store cannot commit (SQLite full), the client gets 451 and nothing is kept."""
    smtp = await start(allowed_networks=LOOPBACK)
    await smtp.send(message().as_bytes())
    writer = smtp.store._writer
    pages = await writer.run(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
    limit = f"PRAGMA max_page_count={pages + 1}"
    await writer.run(lambda conn: conn.execute(limit))
    smtp.store._inline.read(lambda conn: conn.execute(limit))  # a lone accept commits on this one
    big = message("too much for the disk", body="x" * 200_000, message_id="<big@example.com>").as_bytes()
    with pytest.raises(aiosmtplib.SMTPDataError) as failed:
        await smtp.send(big)
    assert failed.value.code == 451
    assert await smtp.count() == 1


async def test_mail_from_is_451_while_the_store_cannot_commit_then_250_once_it_can(start: Start) -> None:
    """Once a commit has failed, MAIL FROM gets 451 4.3.0 before any message is sent and nothing
    is taken; the session goes on (RSET, MAIL again) and, once the store commits, a MAIL in it is
    taken and its message committed."""
    smtp = await start(allowed_networks=LOOPBACK)
    await smtp.read_only(True)
    try:
        with pytest.raises(aiosmtplib.SMTPDataError) as failed:
            await smtp.send(message().as_bytes())
        assert failed.value.code == 451
        async with smtp.client() as client:
            await client.ehlo()
            refused = await client.execute_command(b"MAIL", b"FROM:<app@example.com>")
            assert (refused.code, refused.message) == (451, "4.3.0 Store unavailable, try again later")
            assert (await client.execute_command(b"RCPT", b"TO:<ops@example.com>")).code == 503
            assert (await client.rset()).code == 250
            await smtp.read_only(False)

            async def mail_taken() -> bool:
                return (await client.execute_command(b"MAIL", b"FROM:<app@example.com>")).code == 250

            await until(mail_taken, deadline_s=10, every_s=0.2)
            await client.rcpt("ops@example.com")
            accepted = await client.data(message("stored now", message_id="<m2@example.com>").as_bytes())
    finally:
        await smtp.read_only(False)
    assert accepted.code == 250
    assert (await smtp.stored(accepted.message.split()[-1])).subject == "stored now"
    assert await smtp.count() == 1


async def test_a_client_that_may_not_send_gets_530_not_the_store_state(start: Start) -> None:
    """With the store failing, MAIL FROM without AUTH is still 530, never 451: a client that may not
    send learns nothing of the store. Logged in, the same session gets 451 at MAIL FROM."""
    smtp = await start(users=[ALICE], allow_plaintext_auth_on_loopback=True)
    await smtp.read_only(True)
    try:
        async with smtp.client() as client:
            await client.login("alice", "s3cret")
            with pytest.raises(aiosmtplib.SMTPDataError) as failed:
                await client.sendmail("app@example.com", ["ops@example.com"], message().as_bytes())
        assert failed.value.code == 451
        async with smtp.client() as client:
            await client.ehlo()
            anonymous = await client.execute_command(b"MAIL", b"FROM:<app@example.com>")
            await client.login("alice", "s3cret")
            known = await client.execute_command(b"MAIL", b"FROM:<app@example.com>")
    finally:
        await smtp.read_only(False)
    assert (anonymous.code, known.code) == (530, 451)
    assert await smtp.count() == 0


async def test_message_over_the_size_limit_is_552(start: Start) -> None:
    """A message larger than max_message_bytes is refused with 552 5.3.4 (RFC 3463) and not stored."""
    smtp = await start(allowed_networks=LOOPBACK, max_message_bytes=10_000)
    async with smtp.client() as client:
        await client.ehlo()
        assert client.esmtp_extensions["size"] == "10000"
        await client.mail("app@example.com")
        await client.rcpt("ops@example.com")
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await client.data(message(body="y" * 20_000).as_bytes())
        declared = await client.execute_command(b"MAIL", b"FROM:<app@example.com>", b"SIZE=20000")
    assert (refused.value.code, refused.value.message) == (552, "5.3.4 Message too big for system")
    assert (declared.code, declared.message) == (552, "5.3.4 Message too big for system")
    assert await smtp.count() == 0


async def test_bad_syntax_is_501(start: Start) -> None:
    """A MAIL command without its address is a 501 syntax error."""
    smtp = await start(allowed_networks=LOOPBACK)
    async with smtp.client() as client:
        await client.ehlo()
        response = await client.execute_command(b"MAIL", b"TO:<app@example.com>")
    assert response.code == 501


async def test_smtputf8_and_8bitmime(start: Start) -> None:
    """SMTPUTF8 and 8BITMIME are advertised; an internationalised message is stored intact."""
    smtp = await start(allowed_networks=LOOPBACK)
    raw = (
        "From: Jörg <jörg@bücher.example>\r\nTo: ops@example.com\r\nSubject: Störung: Zähler ausgefallen\r\n"
        "Message-ID: <utf8@bücher.example>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Der Zähler in Köln meldet keinen Wert.\r\n"
    ).encode()
    async with smtp.client() as client:
        await client.ehlo()
        assert {"smtputf8", "8bitmime"} <= set(client.esmtp_extensions)
        _, reply = await client.sendmail(
            "jörg@bücher.example", ["ops@example.com"], raw, mail_options=["SMTPUTF8", "BODY=8BITMIME"]
        )
    stored = await smtp.stored(reply.split()[-1])
    assert stored.raw == raw
    assert stored.mail_from == "jörg@bücher.example"
    assert stored.subject == "Störung: Zähler ausgefallen"
    assert stored.body == "Der Zähler in Köln meldet keinen Wert."


RULES = [
    {"severity_from_header": "X-Backchannel-Severity"},
    {"name": "urgent", "severity": "critical", "importance": ["high"]},
    {"severity": "high", "subject": r"\b(down|outage)\b"},
    {"severity": "warning", "sender": r"^nagios@", "recipient": r"@oncall\.example\.com$"},
    {"severity": "high", "headers": {"X-Alert-Level": "^P[12]$"}},
]


@pytest.mark.parametrize(
    ("headers", "sender", "to", "expected"),
    [
        (
            {"X_Backchannel_Severity": "Warning", "X_Priority": "1 (Highest)"},
            "a@x.test",
            "o@x.test",
            "warning",
        ),
        ({"X_Backchannel_Severity": "bogus", "Importance": "High"}, "a@x.test", "o@x.test", "critical"),
        ({"X_Priority": "1"}, "a@x.test", "o@x.test", "critical"),
        ({"subject": "API DOWN in eu-west"}, "a@x.test", "o@x.test", "high"),
        ({}, "nagios@mon.test", "pager@oncall.example.com", "warning"),
        ({}, "nagios@mon.test", "someone@x.test", "info"),
        ({"X_Alert_Level": "p2"}, "a@x.test", "o@x.test", "high"),
        ({"Priority": "non-urgent"}, "a@x.test", "o@x.test", "info"),
    ],
)
async def test_classification_rules_first_match_wins(
    start: Start, headers: dict[str, str], sender: str, to: str, expected: str
) -> None:
    """Severity comes from the first matching rule, else the default."""
    smtp = await start(allowed_networks=LOOPBACK, rules=RULES, default_severity="info")
    stored = await smtp.stored(await smtp.send(message(**headers).as_bytes(), sender=sender, to=to))
    assert stored.severity == Severity(expected)


async def test_importance_and_rule_are_labels(start: Start) -> None:
    """Routes can match the normalised importance and the name of the rule that decided."""
    smtp = await start(allowed_networks=LOOPBACK, rules=RULES)
    stored = await smtp.stored(await smtp.send(message(X_Priority="2").as_bytes()))
    assert stored.labels["importance"] == "high"
    assert stored.labels["smtp_rule"] == "urgent"


async def test_configured_headers_become_labels_routes_can_match(start: Start) -> None:
    """``label_headers`` puts those headers' decoded values in ``header:<name>`` labels, and only those."""
    smtp = await start(allowed_networks=LOOPBACK, label_headers=["X-Team", "X-Absent"])
    raw = message(X_Team="db-übersicht", X_Other="ignored").as_bytes()
    stored = await smtp.stored(await smtp.send(raw))
    assert stored.labels["header:x-team"] == "db-übersicht"
    assert not {k for k in stored.labels if k.startswith("header:")} - {"header:x-team"}
    route = Route("db", Matcher(conditions=(Condition.parse("header:x-team=~db-.*"),)), ("e",), ("e",))
    assert route_for(stored, [route]).name == "db"


async def test_retry_with_the_same_message_id_is_not_duplicated(start: Start) -> None:
    """A client resending after a lost 250 (same Message-ID and envelope) gets the first notification."""
    smtp = await start(allowed_networks=LOOPBACK)
    raw = message().as_bytes()
    first, again = await smtp.send(raw), await smtp.send(raw)
    other = await smtp.send(raw, to="dba@example.com")
    assert first == again != other
    assert await smtp.count() == 2


async def test_a_reused_message_id_on_a_new_message_is_a_new_notification(start: Start) -> None:
    """Appliances that stamp every alert with the same Message-ID: the second alert is not dropped
    as a repeat of the first (only the same bytes again are)."""
    smtp = await start(allowed_networks=LOOPBACK)
    first = await smtp.send(message("disk 80% on db-1", message_id="<fixed@app>").as_bytes())
    second = await smtp.send(message("disk 95% on db-1: down", message_id="<fixed@app>").as_bytes())
    assert first != second
    assert (await smtp.stored(second)).subject == "disk 95% on db-1: down"


@pytest.mark.parametrize(
    ("address", "reply"),
    [
        ("bad address", "501 5.1.7 Bad sender address syntax"),
        ("a@b@c", "553 5.1.3 Error: malformed address"),  # aiosmtpd's own parser refuses these
        ("app@", "553 5.1.3 Error: malformed address"),
    ],
)
async def test_a_malformed_sender_is_refused(start: Start, address: str, reply: str) -> None:
    """MAIL FROM whose address is not a mailbox is refused, not stored as given."""
    smtp = await start(allowed_networks=LOOPBACK)
    async with smtp.client() as client:
        await client.ehlo()
        response = await client.execute_command(b"MAIL", f"FROM:<{address}>".encode())
    assert f"{response.code} {response.message}" == reply


@pytest.mark.parametrize("address", ['"john doe"@example.com', "root", "ops@[127.0.0.1]"])
async def test_unusual_but_valid_senders_are_taken(start: Start, address: str) -> None:
    """A quoted local part, a bare local part (cron on a host without a mail name), an address literal."""
    smtp = await start(allowed_networks=LOOPBACK)
    stored = await smtp.stored(await smtp.send(message().as_bytes(), sender=address))
    assert stored.mail_from == address


async def test_addresses_that_are_not_utf8_are_refused_at_once(start: Start) -> None:
    """A Latin-1 byte in MAIL FROM or RCPT TO (a broken client, SMTPUTF8 or not): refused for good
    right there (553), not taken with 250 and then refused with 451 at every DATA, nor relayed."""
    smtp = await start(allowed_networks=LOOPBACK)
    reader, writer = await asyncio.open_connection("127.0.0.1", smtp.intake.port)

    async def say(line: bytes) -> bytes:
        return await _say(reader, writer, line)

    await _reply(reader)
    assert (await say(b"EHLO client.example")).startswith(b"250")
    assert (await say(b"MAIL FROM:<caf\xe9@example.com> SMTPUTF8")).startswith(b"553 5.1.7")
    assert (await say(b"MAIL FROM:<app@example.com> SMTPUTF8")).startswith(b"250")
    assert (await say(b"RCPT TO:<d\xe9v@example.com>")).startswith(b"553 5.1.3")
    assert (await say(b"RCPT TO:<d\xc3\xa9v@example.com>")).startswith(b"250")
    writer.close()
    await writer.wait_closed()


async def test_the_auth_parameter_of_mail_from_is_accepted_and_the_login_counts(start: Start) -> None:
    """RFC 4954 section 5: a client may name the message's submitter with AUTH=<mailbox> or
    AUTH=<> on MAIL FROM (Exim does on every authenticated connection); a server that advertises
    AUTH takes the parameter. aiosmtpd alone refused it (555), so such a relay sent nothing. The
    identity claimed is ignored: the session's own login is what the notification records."""
    smtp = await start(users=[ALICE], allow_plaintext_auth_on_loopback=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", smtp.intake.port)

    async def say(line: bytes) -> bytes:
        return await _say(reader, writer, line)

    await _reply(reader)
    assert b"AUTH" in await say(b"EHLO client.example")
    login = base64.b64encode(b"\0alice\0s3cret")
    assert (await say(b"AUTH PLAIN " + login)).startswith(b"235")
    assert (await say(b"MAIL FROM:<app@example.com> AUTH=<> SIZE=100")).startswith(b"250")
    assert (await say(b"RCPT TO:<ops@example.com>")).startswith(b"250")
    assert (await say(b"DATA")).startswith(b"354")
    writer.write(b"Subject: via exim\r\n\r\nbody\r\n")
    queued = await say(b".")
    assert queued.startswith(b"250 2.0.0 OK: queued as")
    stored = await smtp.stored(queued.split()[-1].decode())
    assert (stored.mail_from, stored.labels["smtp_user"]) == ("app@example.com", "alice")
    assert (await say(b"MAIL FROM:<app@example.com> auth=<mallory@evil.example>")).startswith(b"250")
    assert (await say(b"RSET")).startswith(b"250")
    assert (await say(b"MAIL FROM:<app@example.com> AUTH=<> FOO=1")).startswith(b"555")
    assert (await say(b"MAIL FROM:app@example.com AUTH=<>")).startswith(b"250")  # a bare path
    assert (await say(b"RSET")).startswith(b"250")
    assert (await say(b"MAIL FROM:<app@example.com> XAUTH=1")).startswith(b"555")  # not RFC 4954's
    writer.close()
    await writer.wait_closed()


async def test_a_slow_client_still_sending_is_not_idle(start: Start) -> None:
    """idle_timeout 2 s and a client taking 3.2 s over its DATA, a line every 0.4 s: it is never
    idle that long, so its message is taken (aiosmtpd alone cut it off 2 s after DATA)."""
    smtp = await start(allowed_networks=LOOPBACK, idle_timeout="2s")
    reader, writer = await asyncio.open_connection("127.0.0.1", smtp.intake.port)

    async def say(line: bytes) -> bytes:
        return await _say(reader, writer, line)

    await _reply(reader)
    for command in (b"EHLO client.example", b"MAIL FROM:<app@example.com>", b"RCPT TO:<ops@example.com>"):
        assert (await say(command)).startswith(b"250")
    assert (await say(b"DATA")).startswith(b"354")
    writer.write(b"Subject: slow\r\n\r\n")
    for n in range(8):
        await asyncio.sleep(0.4)  # the client's pace, not a wait for the server
        writer.write(b"line %d\r\n" % n)
    assert (await say(b".")).startswith(b"250 2.0.0 OK: queued as")
    writer.close()
    await writer.wait_closed()


async def _say(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> bytes:
    """One command line, and the server's whole reply to it."""
    writer.write(line + b"\r\n")
    await writer.drain()
    return await _reply(reader)


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """One SMTP reply, every line of it."""
    lines = [await reader.readline()]
    while lines[-1][3:4] == b"-":
        lines.append(await reader.readline())
    return b"".join(lines)


async def test_a_client_past_its_session_cap_gets_421(start: Start) -> None:
    """Two sessions from one address outside the allowed networks at most: the third connection
    gets 421 4.7.0 before any greeting; once one closes, a new one is greeted."""
    smtp = await start(users=[ALICE], allow_plaintext_auth_on_loopback=True, max_sessions_per_client=2)
    first, second = [await _greeted(smtp) for _ in range(2)]
    assert await _greeting(smtp) == b"421 4.7.0 Too many connections, try again later\r\n"
    first.close()
    await first.wait_closed()

    async def greeted_again() -> bool:
        return (await _greeting(smtp)).startswith(b"220")

    await until(greeted_again)
    second.close()
    await second.wait_closed()


async def test_allowed_networks_are_spared_the_client_cap_not_the_total(start: Start) -> None:
    """Loopback in the allowed networks: past one session per client, but not past three in all."""
    smtp = await start(allowed_networks=LOOPBACK, max_sessions_per_client=1, max_sessions=3)
    open_ = [await _greeted(smtp) for _ in range(3)]
    assert (await _greeting(smtp)).startswith(b"421 4.7.0")
    for writer in open_:
        writer.close()
        await writer.wait_closed()


async def _greeted(smtp: Harness) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection("127.0.0.1", smtp.intake.port)
    assert (await reader.readline()).startswith(b"220")
    return writer


async def _greeting(smtp: Harness) -> bytes:
    """A new connection's first line, the connection closed after it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", smtp.intake.port)
    try:
        return await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_fifty_concurrent_clients(start: Start) -> None:
    """Fifty clients sending at once all get 250 and every message is stored once."""
    smtp = await start(allowed_networks=LOOPBACK)

    async def one(i: int) -> str:
        return await smtp.send(message(f"load {i}", message_id=f"<load{i}@example.com>").as_bytes())

    ids = await asyncio.gather(*(one(i) for i in range(50)))
    assert len(set(ids)) == 50
    assert await smtp.count() == 50


async def test_stop_answers_421_to_an_open_session(start: Start) -> None:
    """Draining closes the listener and tells a connected client 421."""
    smtp = await start(allowed_networks=LOOPBACK)
    reader, writer = await asyncio.open_connection("127.0.0.1", smtp.intake.port)
    assert (await reader.readline()).startswith(b"220 ")
    writer.write(b"EHLO client.test\r\n")
    while not (await reader.readline()).startswith(b"250 "):
        pass
    port = smtp.intake.port
    await smtp.intake.stop(grace_s=5)
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"421 4.3.2")
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    await writer.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_client_connecting_as_the_intake_stops_gets_421_not_silence(start: Start) -> None:
    """Connections the kernel accepted as the stop began are answered 421 (tests/servers.py's
    stand-ins had the same race: their transports were dropped with the socket open)."""
    smtp = await start(allowed_networks=LOOPBACK)
    # connected while this coroutine holds the loop: they wait in the listener's backlog, and the
    # loop's next turn accepts them and begins the stop together
    clients = [socket.create_connection(("127.0.0.1", smtp.intake.port), timeout=10) for _ in range(4)]
    await stop_as_connections_arrive(lambda: smtp.intake.stop(grace_s=5))
    for client in clients:
        with client:
            greeting = await asyncio.to_thread(client.recv, 1024)
            assert greeting.startswith((b"421 ", b"220 ")), greeting
            assert b"421 4.3.2" in greeting + await asyncio.to_thread(read_until_closed, client)


async def test_message_being_committed_at_drain_gets_250_then_421(start: Start) -> None:
    """A session waiting for its commit when draining starts still gets its 250, then 421."""
    smtp = await start(allowed_networks=LOOPBACK)
    gate = threading.Event()
    # hold the store's writer thread, so the message below waits in the commit queue
    blocker = asyncio.ensure_future(smtp.store._writer.run(lambda conn: gate.wait(60)))
    reader, writer = await asyncio.open_connection("127.0.0.1", smtp.intake.port)
    writer.write(b"HELO client.test\r\nMAIL FROM:<app@example.com>\r\nRCPT TO:<ops@example.com>\r\nDATA\r\n")
    writer.write(message().as_bytes() + b".\r\n")
    replies = [await reader.readline() for _ in range(5)]
    assert [r[:3] for r in replies] == [b"220", b"250", b"250", b"250", b"354"]
    await until(lambda: smtp.intake.committing == 1)
    stopping = asyncio.create_task(smtp.intake.stop(grace_s=60))
    await until(lambda: smtp.intake.draining)
    gate.set()
    accepted = await asyncio.wait_for(reader.readline(), 30)
    assert accepted.startswith(b"250 2.0.0")
    assert (await asyncio.wait_for(reader.readline(), 30)).startswith(b"421 ")
    await stopping
    await blocker
    writer.close()
    await writer.wait_closed()
    assert (await smtp.stored(accepted.split()[-1].decode())).subject == "Disk full on db-1"


def test_config_refuses_an_intake_nobody_could_use() -> None:
    """No users and no networks (nobody could send) or users without TLS (no safe AUTH) are errors."""
    with pytest.raises(ValidationError, match="nobody could send"):
        SmtpIntakeConfig()
    with pytest.raises(ValidationError, match="only log in over TLS"):
        SmtpIntakeConfig.model_validate({"users": [ALICE]})
    with pytest.raises(ValidationError, match="submission_listen requires authentication"):
        SmtpIntakeConfig.model_validate({"allowed_networks": LOOPBACK, "submission_listen": "127.0.0.1:587"})


def test_config_refuses_a_password_in_clear() -> None:
    """A password where its hash belongs is an error naming the expected format."""
    with pytest.raises(ValidationError, match=r"\$scrypt\$"):
        SmtpIntakeConfig.model_validate(
            {"users": [{"name": "bob", "password_hash": "hunter2"}], "allow_plaintext_auth_on_loopback": True}
        )


def test_hash_password_is_salted_and_verifiable() -> None:
    """Two hashes of one password differ (salt) and both verify it; another password fails."""
    first, second = hash_password("pw", ln=4, p=1), hash_password("pw", ln=4, p=1)
    assert first != second and first.startswith("$scrypt$ln=4,r=8,p=1$")
    assert PasswordHash(first).matches(b"pw") and PasswordHash(second).matches(b"pw")
    assert not PasswordHash(first).matches(b"pW")


def test_an_unknown_name_costs_what_the_users_cost() -> None:
    """An unknown name is checked against a hash at the users' cost (the most common one), so a
    wrong password for a cheaply hashed user takes as long as a name that does not exist."""
    cheap = [hash_password(pw, ln=4, r=8, p=1) for pw in ("a", "b")]
    users = Credentials({"a": cheap[0], "b": cheap[1], "c": hash_password("c", ln=5, r=8, p=1)})
    assert users.dummy.params == (4, 8, 1)
    assert Credentials({}).dummy.params == (14, 8, 5)


async def test_repeated_auth_failures_end_the_session(start: Start) -> None:
    """After three AUTH attempts in one session the server answers 421 and hangs up."""
    smtp = await start(users=[ALICE], allow_plaintext_auth_on_loopback=True)
    wrong = b"AGFsaWNlAHdyb25n"  # base64 of "\0alice\0wrong"
    async with smtp.client() as client:
        await client.ehlo()
        codes = [(await client.execute_command(b"AUTH", b"PLAIN", wrong)).code for _ in range(4)]
        assert not client.is_connected
    assert codes == [535, 535, 535, 421]


async def test_busy_port_fails_start_and_releases_the_other(start: Start) -> None:
    """If the submission port is taken, start() raises and the main listener's socket is released."""
    taken = await start(allowed_networks=LOOPBACK)
    settings = SmtpIntakeConfig.model_validate(
        {
            "listen": "127.0.0.1:0",
            "submission_listen": f"127.0.0.1:{taken.intake.port}",
            "users": [ALICE],
            "allow_plaintext_auth_on_loopback": True,
        }
    )
    intake = SmtpIntake(settings, Acceptor(taken.store, lambda: ROUTES, SystemClock(), lambda: None))
    with pytest.raises(OSError, match="in use"):
        await intake.start()


@pytest.mark.parametrize("mechanism", [b"login", b"plain", b"Login"])
async def test_auth_mechanism_names_are_case_insensitive(
    start: Start, tls_files: tuple[dict[str, str], ssl.SSLContext], mechanism: bytes
) -> None:
    """RFC 4954 section 4: .NET's SmtpClient (PowerShell's Send-MailMessage, SQL Server Database
    Mail) sends ``AUTH login``, which logs in as ``AUTH LOGIN`` does (aiosmtpd alone answered 504)."""
    tls, client_context = tls_files
    smtp = await start(users=[ALICE], tls=tls)
    async with smtp.client() as client:
        await client.ehlo()
        await client.starttls(tls_context=client_context)
        await client.ehlo()
        if mechanism.upper() == b"PLAIN":
            reply = await client.execute_command(b"AUTH", mechanism, base64.b64encode(b"\0alice\0s3cret"))
        else:
            asked = await client.execute_command(b"AUTH", mechanism, base64.b64encode(b"alice"))
            assert asked.code == 334
            reply = await client.execute_command(base64.b64encode(b"s3cret"))
        assert reply.code == 235
        await client.sendmail("app@example.com", ["ops@example.com"], message().as_bytes())
    assert await smtp.count() == 1


async def test_the_default_greeting_name_is_not_the_host_name(start: Start) -> None:
    """A Postfix on this host relaying here bounces its mail as a loop (5.4.6) when the EHLO reply
    names its own host: the default is ``backchannel.<host name>``; a configured hostname wins."""
    default = await start(allowed_networks=LOOPBACK)
    named = await start(allowed_networks=LOOPBACK, hostname="relay.example.com")
    expected = f"backchannel.{socket.gethostname()}"
    assert await _names(default) == [expected, expected]
    assert await _names(named) == ["relay.example.com", "relay.example.com"]


def test_delivery_reports_come_from_a_name_that_exists() -> None:
    """The reports' From is MAILER-DAEMON at the configured hostname or the host's own name, not
    at the greeting's default (backchannel.<host>, a name with no DNS a provider could check)."""
    networks = {"allowed_networks": ["127.0.0.0/8"]}
    assert SmtpIntakeConfig(**networks).report_from == f"MAILER-DAEMON@{socket.gethostname()}"
    named = SmtpIntakeConfig(**networks, hostname="relay.example.com")
    assert named.report_from == "MAILER-DAEMON@relay.example.com"
    chosen = SmtpIntakeConfig(**networks, bounce_from="postmaster@example.com")
    assert chosen.report_from == "postmaster@example.com"


async def _names(smtp: Harness) -> list[str]:
    """The first word after the code of the 220 greeting and of the EHLO reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", smtp.intake.port)
    replies = [await _reply(reader), await _say(reader, writer, b"EHLO mail.example")]
    writer.close()
    await writer.wait_closed()
    return [reply[4:].split()[0].decode() for reply in replies]


@pytest.fixture
def daemon_log() -> Iterator[io.StringIO]:
    """The daemon's logging as ``backchannel run`` sets it up, aiosmtpd's logger at every level."""
    root, mail_log = logging.getLogger(), logging.getLogger("mail.log")
    handlers, level, mail_level = list(root.handlers), root.level, mail_log.level
    out = io.StringIO()
    configure_logging(json=True, level="DEBUG", stream=out)
    mail_log.setLevel(logging.DEBUG)
    yield out
    root.handlers[:] = handlers
    root.setLevel(level)
    mail_log.setLevel(mail_level)


async def test_credentials_sent_as_commands_never_reach_the_log(
    start: Start, tls_files: tuple[dict[str, str], ssl.SSLContext], daemon_log: io.StringIO
) -> None:
    """A client pipelining AUTH LOGIN's answers after a 538 has them read as unknown commands:
    aiosmtpd's record of them is kept, their text (the base64 of the password) is not."""
    tls, _ = tls_files
    smtp = await start(users=[ALICE], tls=tls)
    user, password = base64.b64encode(b"alice"), base64.b64encode(b"s3cret")
    reader, writer = await asyncio.open_connection("127.0.0.1", smtp.intake.port)
    await _reply(reader)
    await _say(reader, writer, b"EHLO printer.example")
    writer.write(b"AUTH LOGIN\r\n" + user + b"\r\n" + password + b"\r\n")
    replies = [await _reply(reader) for _ in range(3)]
    await _say(reader, writer, b"QUIT")
    writer.close()
    await writer.wait_closed()
    assert [r[:3] for r in replies] == [b"538", b"500", b"500"]
    logged = daemon_log.getvalue()
    assert "unrecognised" in logged
    assert user.decode().upper() not in logged.upper() and password.decode().upper() not in logged.upper()


async def test_the_log_still_names_the_command_sent_too_often(
    start: Start, tls_files: tuple[dict[str, str], ssl.SSLContext], daemon_log: io.StringIO
) -> None:
    """What the client sent is kept out of the log, but not a command's name: aiosmtpd's warning
    of AUTH sent past its limit (repeated login attempts) still says AUTH."""
    tls, _ = tls_files
    smtp = await start(users=[ALICE], tls=tls)
    reader, writer = await asyncio.open_connection("127.0.0.1", smtp.intake.port)
    await _reply(reader)
    await _say(reader, writer, b"EHLO printer.example")
    replies = [await _say(reader, writer, b"AUTH LOGIN") for _ in range(4)]
    writer.close()
    await writer.wait_closed()
    assert [r[:3] for r in replies] == [b"538", b"538", b"538", b"421"]
    assert "over limit for AUTH" in daemon_log.getvalue()


async def test_a_header_in_a_charset_python_lacks_is_taken_not_refused_for_ever(start: Start) -> None:
    """An encoded word in windows-874 in a To: the stdlib's parser fails on: 250, and a retry is
    the same notification (rendering raised, and the client got 451 at every retry)."""
    smtp = await start(allowed_networks=LOOPBACK)
    raw = (
        b"From: alerts@example.com\r\nTo: =?windows-874?B?4eTp?= <m@example.com>, <\r\n"
        b"Subject: disk full\r\nMessage-ID: <a2@example.com>\r\n\r\nbody\r\n"
    )
    first, again = await smtp.send(raw), await smtp.send(raw)
    stored = await smtp.stored(first)
    assert first == again
    assert (stored.subject, stored.body, stored.raw) == ("disk full", "body", raw)


async def test_a_message_that_cannot_be_rendered_is_kept_with_a_placeholder(start: Start) -> None:
    """Multiparts nested 600 deep exhaust Python's recursion in the email parser: the message is
    kept byte for byte with its subject and a placeholder text, and the client gets 250 (not 451,
    which it would retry for ever)."""
    smtp = await start(allowed_networks=LOOPBACK)
    nested = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1) for i in range(600)
    )
    raw = (
        b"Subject: deep\r\nMessage-ID: <deep@example.com>\r\n"
        + b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
        + nested
        + b"--b600\r\nContent-Type: text/plain\r\n\r\nleaf\r\n"
    )
    stored = await smtp.stored(await smtp.send(raw))
    assert (stored.subject, stored.body, stored.raw) == ("deep", UNREADABLE, raw)


async def test_a_latin1_subject_is_classified_and_shown_as_written(start: Start) -> None:
    """A legacy application's raw Latin-1 Subject (8-bit, not encoded) matches a subject rule and
    reaches the backup channels readable (it was U+FFFD, so the rule missed: severity info)."""
    rules = [{"severity": "critical", "subject": r"st(ö|oe)rung"}]
    smtp = await start(allowed_networks=LOOPBACK, rules=rules, default_severity="info")
    raw = b"Subject: St\xf6rung Datenbank\r\nMessage-ID: <l1@example.com>\r\n\r\nKeine Verbindung.\r\n"
    stored = await smtp.stored(await smtp.send(raw))
    assert (stored.subject, stored.severity, stored.raw) == ("Störung Datenbank", Severity.CRITICAL, raw)


async def test_hostile_html_is_taken_in_time_with_bounded_text(start: Start) -> None:
    """An HTML message of unclosed <a> and <blockquote> tags is answered 250 in seconds (it held a
    worker thread for minutes, and its text grew to gigabytes), its text capped as any other."""
    smtp = await start(allowed_networks=LOOPBACK, body_max_chars=500)
    html = b'<a href="https://x.test/">\r\n' * 20_000 + b"<blockquote>\r\n" * 3_000 + b"x<br>\r\n" * 20_000
    raw = b"Subject: hostile\r\nMessage-ID: <h1@example.com>\r\nContent-Type: text/html\r\n\r\n" + html
    started = asyncio.get_running_loop().time()
    stored = await smtp.stored(await smtp.send(raw))
    assert asyncio.get_running_loop().time() - started < 20
    assert stored.raw == raw and len(stored.body) <= 500


async def test_a_successful_login_logs_no_deprecation_warning(start: Start, daemon_log: io.StringIO) -> None:
    """aiosmtpd sets its own deprecated Session.login_data on every successful AUTH and warns about
    it: nothing an operator can act on, so it does not reach the log (a warning per login)."""
    smtp = await start(users=[ALICE], allow_plaintext_auth_on_loopback=True)
    async with smtp.client() as client:
        await client.login("alice", "s3cret")
        await client.sendmail("app@example.com", ["ops@example.com"], message().as_bytes())
    assert await smtp.count() == 1
    assert "login_data" not in daemon_log.getvalue()
