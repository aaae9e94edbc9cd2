"""The SMTP smart host in the running daemon: relay, failover of critical mail, 250 means committed."""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.acceptance.harness import DaemonProcess, free_port, until
from tests.servers import SmtpServer, WebhookReceiver

ROUTES = """\
  - name: critical
    match: {severity: [critical]}
    healthy: [email]
    outage: [hook]
  - name: rest
    match: {}
    healthy: [email]
    outage: defer
"""


def intake(port: int) -> str:
    return f"""\
intake:
  smtp:
    listen: 127.0.0.1:{port}
    allowed_networks: [127.0.0.0/8]
    recipient_domains: [example.com]
    rules:
      - {{name: urgent, importance: [high], severity: critical}}
"""


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[DaemonProcess, SmtpServer, WebhookReceiver, int]]:
    port = free_port()
    with SmtpServer() as provider, WebhookReceiver() as hook:
        daemon = DaemonProcess(
            tmp_path, smtp_port=provider.port, hook_url=hook.url, routes=ROUTES, extra=intake(port)
        )
        daemon.start()
        try:
            yield daemon, provider, hook, port
        finally:
            daemon.close()


def message(subject: str, *, urgent: bool = False) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "app@example.com"
    msg["To"] = "oncall@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{abs(hash(subject))}@app.example.com>"
    if urgent:
        msg["Importance"] = "high"
    msg.set_content("The nightly job failed.\n\nDetails in the attachment.\n")
    msg.add_alternative("<p>The nightly job <b>failed</b>.</p>", subtype="html")
    msg.add_attachment(
        b"\x00\x01binary log\xff" * 100, maintype="application", subtype="octet-stream", filename="job.log"
    )
    return msg


def send(port: int, msg: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        assert client.send_message(msg, "app@example.com", ["oncall@example.com"]) == {}


def test_healthy_relay_is_byte_identical(
    relay: tuple[DaemonProcess, SmtpServer, WebhookReceiver, int],
) -> None:
    """A multipart message with an attachment reaches the provider exactly as the client sent it."""
    _, provider, _, port = relay
    original = message("nightly job")
    sent = original.as_bytes(policy=email.policy.SMTP)
    send(port, original)
    (received,) = provider.wait_for(1)
    assert received.data == sent
    assert received.mail_from == "app@example.com"
    assert received.rcpt_tos == ("oncall@example.com",)


def test_outage_sends_critical_mail_as_text_and_holds_the_rest(
    relay: tuple[DaemonProcess, SmtpServer, WebhookReceiver, int],
) -> None:
    """In an outage urgent mail reaches the webhook as readable text; after recovery the rest is
    relayed, and the urgent one too, byte for byte: its mailbox has not had it yet."""
    daemon, provider, hook, port = relay
    provider.stop()
    until(lambda: daemon.provider_state() == "outage", what="outage")
    urgent = message("database down", urgent=True)
    sent = urgent.as_bytes(policy=email.policy.SMTP)  # fixes the MIME boundary
    send(port, urgent)
    send(port, message("weekly report"))
    (request,) = hook.wait_for(1)
    body = request.json()
    assert body["subject"] == "database down"
    assert body["severity"] == "critical"
    assert "The nightly job failed." in body["body"]
    assert "job.log" in body["body"]
    assert "<b>" not in body["body"]
    provider.start()
    until(lambda: daemon.provider_state() == "healthy", what="recovery")
    held, again = sorted(provider.wait_for(2, timeout_s=20), key=lambda m: b"weekly report" not in m.data)
    assert b"Subject: weekly report" in held.data  # held, sent at the recovery
    assert again.data == sent  # by the catch-up
    assert again.rcpt_tos == ("oncall@example.com",)


def test_250_means_committed(tmp_path: Path) -> None:
    """Killed right after the 250, the daemon still has the message when it comes back."""
    port = free_port()
    with SmtpServer() as provider, WebhookReceiver() as hook:
        provider.reply(451, "4.3.0 not now", stage="mail")
        daemon = DaemonProcess(
            tmp_path, smtp_port=provider.port, hook_url=hook.url, routes=ROUTES, extra=intake(port)
        )
        daemon.start()
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.ehlo()
                client.mail("app@example.com")
                client.rcpt("oncall@example.com")
                code, text = client.data(message("must survive").as_bytes(policy=email.policy.SMTP))
                daemon.kill()
            assert code == 250
            queued = re.search(r"queued as (\S+)", text.decode())
            assert queued is not None
            daemon.start()
            assert daemon.notification(queued[1])["subject"] == "must survive"
            provider.accept()
            (relayed,) = provider.wait_for(1, timeout_s=20)
            assert b"must survive" in relayed.data
        finally:
            daemon.close()
