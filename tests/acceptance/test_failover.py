"""The daemon as a process: email while healthy, failover during an outage, recovery, drain."""

from __future__ import annotations

import email
from collections.abc import Iterator
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from tests.acceptance.harness import WEBHOOK_SECRET, DaemonProcess, until
from tests.servers import SmtpServer, WebhookReceiver


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[DaemonProcess, SmtpServer, WebhookReceiver]]:
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        daemon = DaemonProcess(tmp_path, smtp_port=smtp.port, hook_url=hook.url)
        daemon.start()
        try:
            yield daemon, smtp, hook
        finally:
            daemon.close()


def _ids(mails: list[object]) -> list[str]:
    return [str(email.message_from_bytes(m.data)["X-Backchannel-Id"]) for m in mails]  # type: ignore[attr-defined]


def test_failover_and_recovery(stack: tuple[DaemonProcess, SmtpServer, WebhookReceiver]) -> None:
    """Healthy → email; provider down → outage, critical by webhook, rest held; back → held by email."""
    daemon, smtp, hook = stack
    first = [daemon.send("critical", "before: critical"), daemon.send("info", "before: info")]
    assert sorted(_ids(smtp.wait_for(2))) == sorted(first)

    smtp.stop()
    until(lambda: daemon.provider_state() == "outage", what="outage")
    events = daemon.status()["provider"]["events"]
    assert events[0]["to"] == "outage"
    assert "3 failing rounds" in events[0]["cause"]

    critical = daemon.send("critical", "during: critical")
    held = daemon.send("warning", "during: warning")
    (request,) = hook.wait_for(1)
    payload = Webhook(WEBHOOK_SECRET).verify(request.body, dict(request.headers))
    assert payload["id"] == critical
    assert request.headers["webhook-id"] == critical
    until(lambda: daemon.notification(held)["status"] == "held", what="held")

    smtp.start()
    until(lambda: daemon.provider_state() == "healthy", what="recovery")
    assert _ids(smtp.wait_for(3))[2] == held
    recovery = next(e for e in daemon.status()["provider"]["events"] if e["to"] == "healthy")
    assert "ok" in recovery["cause"]
    assert len(hook.requests) == 1


def test_restart_resumes_outage_state(stack: tuple[DaemonProcess, SmtpServer, WebhookReceiver]) -> None:
    """A daemon restarted during an outage still routes around the provider."""
    daemon, smtp, hook = stack
    smtp.stop()
    until(lambda: daemon.provider_state() == "outage", what="outage")
    assert daemon.terminate() == 0
    daemon.start()
    assert daemon.provider_state() == "outage"
    critical = daemon.send("critical", "after restart")
    (request,) = hook.wait_for(1)
    assert request.json()["id"] == critical


def test_sigterm_drains_and_exits_zero(stack: tuple[DaemonProcess, SmtpServer, WebhookReceiver]) -> None:
    """SIGTERM exits 0 and anything not yet sent is still there after the restart."""
    daemon, smtp, _ = stack
    smtp.reply(451, "4.3.0 try again later", stage="mail")
    pending = daemon.send("info", "sent after restart")
    until(lambda: daemon.notification(pending)["attempts"], what="a failed attempt")
    assert daemon.terminate() == 0
    smtp.accept()
    daemon.start()
    assert _ids(smtp.wait_for(1)) == [pending]


def test_bad_token_is_refused(stack: tuple[DaemonProcess, SmtpServer, WebhookReceiver]) -> None:
    """Intake needs credentials."""
    daemon, _, _ = stack
    response = daemon.client.post(
        "/v1/notifications",
        json={"severity": "info", "subject": "x"},
        headers={"Authorization": "Bearer wrong"},
    )
    assert response.status_code == 401
