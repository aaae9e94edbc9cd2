"""Intake workers as real processes: kill -9 a worker mid-burst, kill -9 the daemon, SIGTERM.

Nothing a worker acknowledged is lost (it committed first); a killed worker is started again on
the same port; a daemon killed with -9 takes its workers with it (they see their control pipe
close), so the restarted daemon can bind the port again; SIGTERM stops everything cleanly.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from collections import Counter
from pathlib import Path

import httpx

from tests.acceptance.harness import TOKEN, WEBHOOK_ONLY_ROUTES, DaemonProcess, free_port, until
from tests.acceptance.test_kill9 import Producer
from tests.servers import SmtpServer, WebhookReceiver

TOTAL = 600
KILLS = 3
WORKERS = 2


def _daemon(tmp_path: Path, smtp: SmtpServer, hook: WebhookReceiver) -> tuple[DaemonProcess, int]:
    port = free_port()
    extra = f"intake: {{workers: {{listen: '127.0.0.1:{port}', count: {WORKERS}}}}}"
    daemon = DaemonProcess(
        tmp_path, smtp_port=smtp.port, hook_url=hook.url, routes=WEBHOOK_ONLY_ROUTES, extra=extra
    )
    return daemon, port


def _workers_of(pid: int) -> list[int]:
    """The daemon's intake worker processes (its children running daemon.intake.worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"daemon.intake.worker" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def _all_serving(daemon: DaemonProcess) -> bool:
    """The daemon counts every worker serving (they start after its API answers)."""
    metrics = daemon.client.get("/metrics").text
    return f"backchannel_intake_workers {WORKERS}.0" in metrics


def _serving(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_killing_workers_mid_burst_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(20261127)
    keys = [f"w-{i:04d}" for i in range(TOTAL)]
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        daemon, port = _daemon(tmp_path, smtp, hook)
        producer = Producer(port)
        try:
            daemon.start()
            assert daemon.proc is not None
            pid = daemon.proc.pid
            until(lambda: _all_serving(daemon) and _serving(port), 30, "workers serving")
            for _ in range(KILLS):
                remaining = [k for k in keys if k not in producer.acked]
                thread = threading.Thread(target=producer.run, args=(remaining,))
                thread.start()
                target = len(producer.acked) + rng.randint(20, max(20, len(remaining) // 3))
                until(lambda t=target, th=thread: len(producer.acked) >= t or not th.is_alive(), 60, "acks")
                victim = rng.choice(_workers_of(pid))
                os.kill(victim, signal.SIGKILL)
                thread.join()
                until(lambda v=victim: v not in _workers_of(pid) and _all_serving(daemon), 30, "restart")
            producer.run([k for k in keys if k not in producer.acked])
            assert producer.acked == set(keys)
            until(lambda: set(_delivered(hook)) >= producer.acked, 120, "every acknowledged delivery")
            log = daemon.log_path.read_text()
            assert log.count('"event":"intake.worker_exited"') >= KILLS
        finally:
            daemon.close()
        delivered = Counter(_delivered(hook))
    assert set(delivered) <= set(keys), "delivered something never submitted"
    # the daemon itself never died: a worker's death re-sends nothing, re-posts are duplicates by key
    assert sum(delivered.values()) == len(delivered), "a notification was delivered twice"


def test_kill9_of_the_daemon_takes_its_workers_along(tmp_path: Path) -> None:
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        daemon, port = _daemon(tmp_path, smtp, hook)
        try:
            daemon.start()
            assert daemon.proc is not None
            pid = daemon.proc.pid
            until(lambda: _all_serving(daemon), 30, "workers serving")
            workers = _workers_of(pid)
            daemon.kill()
            until(lambda: not any(_alive(w) for w in workers), 20, "orphaned workers exiting")
            daemon.start()  # binds the same ports again
            until(lambda: _all_serving(daemon), 30, "the restarted daemon's workers")
            body = {"severity": "critical", "subject": "after restart"}
            answer = httpx.post(
                f"http://127.0.0.1:{port}/v1/notifications",
                json=body,
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert answer.status_code == 202, answer.text
            until(lambda: "after restart" in _delivered(hook), 30, "delivery")
            new_workers = _workers_of(daemon.proc.pid)
            assert daemon.terminate() == 0
            until(lambda: not any(_alive(w) for w in new_workers), 20, "workers stopped by SIGTERM")
        finally:
            daemon.close()


def _delivered(hook: WebhookReceiver) -> list[str]:
    return [r.json()["subject"] for r in hook.requests]
