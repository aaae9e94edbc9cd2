"""kill -9 at random moments during a burst: nothing acknowledged is lost, duplicates are bounded.

Checked like Jepsen's queue checker: every acknowledged notification is delivered at least once,
nothing is delivered that was never submitted, and duplicates stay within kills x sends in flight
(those sending and those whose outcome is being recorded: twice the channel's concurrency).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from pathlib import Path

import httpx

from daemon.send_slots import RECORDING_PER_SLOT
from tests.acceptance.harness import TOKEN, WEBHOOK_ONLY_ROUTES, DaemonProcess, until
from tests.servers import SmtpServer, WebhookReceiver

TOTAL = 1000
BATCH = 20
KILLS = 3
HOOK_CONCURRENCY = 8


class Producer:
    """Posts every key not yet acknowledged, in batches, from a few threads, until told to stop."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/v1/notifications"
        self.acked: set[str] = set()
        self.lock = threading.Lock()

    def run(self, keys: list[str], threads: int = 4) -> None:
        chunks = [keys[i : i + BATCH] for i in range(0, len(keys), BATCH)]
        workers = [threading.Thread(target=self._post, args=(chunks[n::threads],)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def _post(self, chunks: list[list[str]]) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
            for chunk in chunks:
                body = [{"severity": "critical", "subject": key, "idempotency_key": key} for key in chunk]
                try:
                    response = client.post(self.url, json=body)
                except httpx.TransportError:
                    return  # the daemon was killed: whatever was not acknowledged is sent again later
                if response.status_code == 202:
                    with self.lock:
                        self.acked.update(chunk)


def test_kill9_during_bursts_loses_nothing(tmp_path: Path) -> None:
    """Acknowledged notifications all arrive after repeated kill -9 and restarts."""
    rng = random.Random(20261127)
    keys = [f"k-{i:04d}" for i in range(TOTAL)]
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        daemon = DaemonProcess(tmp_path, smtp_port=smtp.port, hook_url=hook.url, routes=WEBHOOK_ONLY_ROUTES)
        producer = Producer(daemon.api_port)
        try:
            daemon.start()
            for _ in range(KILLS):
                remaining = [k for k in keys if k not in producer.acked]
                thread = threading.Thread(target=producer.run, args=(remaining,))
                thread.start()
                target = len(producer.acked) + rng.randint(BATCH, max(BATCH, len(remaining) // 2))
                until(lambda t=target, th=thread: len(producer.acked) >= t or not th.is_alive(), 60, "acks")
                daemon.kill()
                thread.join()
                daemon.start()
            producer.run([k for k in keys if k not in producer.acked])
            assert producer.acked == set(keys)
            until(lambda: set(_delivered(hook)) >= producer.acked, 120, "every acknowledged delivery")
        finally:
            daemon.close()
        delivered = Counter(_delivered(hook))
    duplicates = sum(delivered.values()) - len(delivered)
    print(f"delivered {len(delivered)} unique, {duplicates} duplicates over {KILLS} kills")
    assert set(delivered) <= set(keys), "delivered something never submitted"
    assert duplicates <= KILLS * HOOK_CONCURRENCY * RECORDING_PER_SLOT


def _delivered(hook: WebhookReceiver) -> list[str]:
    return [r.json()["subject"] for r in hook.requests]
