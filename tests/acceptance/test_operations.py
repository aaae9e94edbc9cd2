"""Operating the daemon as a process: reload with SIGHUP, drain with SIGTERM."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.harness import TOKEN, WEBHOOK_ONLY_ROUTES, DaemonProcess, until
from tests.servers import ScriptedResponse, SmtpServer, WebhookReceiver

HOLD_THE_REST = """\
  - name: critical
    match: {severity: [critical]}
    healthy: [email]
    outage: [hook]
  - name: rest
    match: {}
    healthy: [email]
    outage: defer
"""
SEND_THE_REST = HOLD_THE_REST.replace("outage: defer", "outage: [hook]")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[DaemonProcess, SmtpServer, WebhookReceiver]]:
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        daemon = DaemonProcess(tmp_path, smtp_port=smtp.port, hook_url=hook.url, routes=HOLD_THE_REST)
        daemon.start()
        try:
            yield daemon, smtp, hook
        finally:
            daemon.close()


def _hup(daemon: DaemonProcess) -> None:
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)


def test_broken_reload_keeps_the_running_config(
    stack: tuple[DaemonProcess, SmtpServer, WebhookReceiver],
) -> None:
    """A reload of a broken file is rejected with its errors logged; the daemon keeps working as before."""
    daemon, smtp, _ = stack
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good.replace("outage: defer", "outage: [nowhere]"))
    _hup(daemon)
    until(lambda: "config.reload_failed" in daemon.log_path.read_text(), what="rejection logged")
    assert "routes[1].outage[0]: unknown channel 'nowhere'" in daemon.log_path.read_text()
    nid = daemon.send("info", "still accepted")
    smtp.wait_for(1)
    assert daemon.notification(nid)["status"] in ("pending", "delivered")
    metrics = daemon.client.get("/metrics").text
    assert 'backchannel_config_reloads_total{result="rejected"} 1.0' in metrics


def test_a_reload_cannot_route_through_a_channel_it_adds(
    stack: tuple[DaemonProcess, SmtpServer, WebhookReceiver],
) -> None:
    """A channel added by a reload would never send: rejected, naming it; the old routes stay."""
    daemon, _, hook = stack
    good = daemon.config_path.read_text()
    added = good.replace("routes:", "  pager: {type: email, to: [pager@test.example]}\nroutes:", 1)
    daemon.config_path.write_text(added.replace("outage: defer", "outage: [pager]"))
    _hup(daemon)
    until(lambda: "config.reload_failed" in daemon.log_path.read_text(), what="rejection logged")
    line = added.splitlines().index("  pager: {type: email, to: [pager@test.example]}") + 1
    expected = f"{daemon.config_path}:{line}: channels.pager: a new channel the routes use"
    assert expected in daemon.log_path.read_text()
    daemon.client.post("/v1/provider/override", json={"state": "outage"})
    held = daemon.send("warning", "held by the running policy")
    until(lambda: daemon.notification(held)["status"] == "held", what="held")
    assert hook.requests == []


def test_reload_applies_new_routes_to_pending(
    stack: tuple[DaemonProcess, SmtpServer, WebhookReceiver],
) -> None:
    """A notification held by the old policy is sent by the new one after SIGHUP."""
    daemon, _, hook = stack
    daemon.client.post("/v1/provider/override", json={"state": "outage"})
    held = daemon.send("warning", "held by the old policy")
    until(lambda: daemon.notification(held)["status"] == "held", what="held")
    daemon.write_config(SEND_THE_REST)
    _hup(daemon)
    (request,) = hook.wait_for(1, timeout_s=20)
    assert request.json()["id"] == held
    assert daemon.notification(held)["route"] == "rest"


def test_sigterm_during_a_burst_loses_nothing(tmp_path: Path) -> None:
    """SIGTERM mid-burst: the daemon exits 0 within its grace period; after a restart all is delivered."""
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        hook.respond(ScriptedResponse(delay_s=0.2))
        daemon = DaemonProcess(tmp_path, smtp_port=smtp.port, hook_url=hook.url, routes=WEBHOOK_ONLY_ROUTES)
        daemon.start()
        acked: list[str] = []
        stop = threading.Event()

        def produce() -> None:
            with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
                for batch in range(40):
                    if stop.is_set():
                        return
                    subjects = [f"n{batch}-{i}" for i in range(10)]
                    try:
                        response = client.post(
                            f"http://127.0.0.1:{daemon.api_port}/v1/notifications",
                            json=[{"severity": "critical", "subject": s} for s in subjects],
                        )
                    except httpx.TransportError:
                        return
                    if response.status_code == 202:
                        acked.extend(subjects)
                    elif response.status_code == 503:
                        return

        producer = threading.Thread(target=produce)
        try:
            producer.start()
            until(lambda: len(acked) >= 100, what="a burst under way")
            assert daemon.terminate(timeout_s=30) == 0
            stop.set()
            producer.join()
            delivered_before = len(hook.requests)
            assert delivered_before < len(acked), "the drain should leave work in the outbox"
            daemon.start()
            until(lambda: {r.json()["subject"] for r in hook.requests} >= set(acked), 60, "all delivered")
        finally:
            stop.set()
            daemon.close()
    assert "daemon.stopped" in daemon.log_path.read_text()
