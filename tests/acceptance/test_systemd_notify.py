"""The daemon as a process speaks the NOTIFY_SOCKET protocol to a real datagram socket."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.harness import DaemonProcess, until
from tests.servers import SmtpServer, WebhookReceiver

WATCHDOG_S = 1.0


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []

    def drain(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return [m for _, m in self.messages]
            self.messages.append((time.monotonic(), data.decode()))

    def seen(self, fragment: str) -> bool:
        return any(fragment in m for m in self.drain())

    def pings_between(self, start: float, end: float) -> int:
        self.drain()
        return sum(1 for at, m in self.messages if start <= at <= end and "WATCHDOG=1" in m)


@pytest.fixture
def notified(tmp_path: Path) -> Iterator[tuple[DaemonProcess, NotifySocket]]:
    notify = NotifySocket(tmp_path / "notify.sock")
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        daemon = DaemonProcess(tmp_path, smtp_port=smtp.port, hook_url=hook.url)
        daemon.start(wait=False, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC=str(int(WATCHDOG_S * 1e6)))
        try:
            yield daemon, notify
        finally:
            daemon.close()
            notify.sock.close()


def test_ready_only_once_the_api_answers(notified: tuple[DaemonProcess, NotifySocket]) -> None:
    """READY=1 arrives, with a STATUS line, and by then the API already answers."""
    daemon, notify = notified
    until(lambda: notify.seen("READY=1"), what="READY=1")
    assert daemon.client.get("/healthz").status_code == 200
    ready = next(m for m in notify.drain() if "READY=1" in m)
    assert "STATUS=provider healthy" in ready


def test_watchdog_pings_stop_while_the_process_is_frozen(
    notified: tuple[DaemonProcess, NotifySocket],
) -> None:
    """WATCHDOG=1 comes at half the period; a frozen process sends none; they resume after."""
    daemon, notify = notified
    until(lambda: notify.seen("READY=1"), what="READY=1")
    start = time.monotonic()
    until(lambda: notify.pings_between(start, time.monotonic()) >= 3, what="watchdog pings")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    until(lambda: time.monotonic() - frozen_at > 3 * WATCHDOG_S, what="time passing")
    assert notify.pings_between(frozen_at + 0.1, time.monotonic()) == 0
    daemon.proc.send_signal(signal.SIGCONT)
    thawed = time.monotonic()
    until(lambda: notify.pings_between(thawed, time.monotonic()) >= 1, what="pings after SIGCONT")


def test_reload_and_stop_are_announced(notified: tuple[DaemonProcess, NotifySocket]) -> None:
    """SIGHUP sends RELOADING=1 then READY=1; SIGTERM sends STOPPING=1 and exits 0."""
    daemon, notify = notified
    until(lambda: notify.seen("READY=1"), what="READY=1")
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    until(lambda: notify.seen("RELOADING=1"), what="RELOADING=1")
    reloading = next(i for i, m in enumerate(notify.drain()) if "RELOADING=1" in m)
    assert "MONOTONIC_USEC=" in notify.drain()[reloading]
    until(lambda: any("READY=1" in m for m in notify.drain()[reloading:]), what="READY=1 after reload")
    assert daemon.terminate() == 0
    assert notify.seen("STOPPING=1")
    with pytest.raises(httpx.TransportError):
        daemon.client.get("/healthz")
