"""Failover and recovery timing against a provider that really goes away.

Starts ``backchannel run`` as a process (checks every 1 s, failure and success thresholds of 3)
with a local SMTP server as the provider and a local webhook receiver as the backup. Each cycle:
the provider's port closes and a critical notification is submitted; we time the outage
declaration (the daemon's stored transition), the critical notification's arrival at the webhook,
then reopen the port and time the recovery and the held mail's arrival by email.

Targets (issue 2): declared within failure_threshold x every + 1 s; first backup delivery at most
1 s after the declaration.

    .venv/bin/python bench/failover.py [--cycles 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DaemonUnderTest, free_port
from daemon.demo.standins import SmtpProvider, WebhookReceiver

EVERY_S, THRESHOLD = 1.0, 3


def wait(predicate: Any, what: str, deadline_s: float = 30.0) -> Any:
    deadline = time.monotonic() + deadline_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)
    return value


def transition_at(client: httpx.Client, to_state: str) -> float:
    events = client.get("/v1/status").json()["provider"]["events"]
    at = next(e["at"] for e in events if e["to"] == to_state)
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def cycle(client: httpx.Client, smtp: SmtpProvider, hook: WebhookReceiver, traffic: bool) -> dict[str, float]:
    """One outage and recovery; with ``traffic`` a critical notification is already being sent
    by email when the provider goes down (its failed sends are passive signals too)."""

    def state() -> str:
        return str(client.get("/v1/status").json()["provider"]["state"])

    wait(lambda: state() == "healthy", "healthy before the cycle")
    hooks, mails = len(hook.arrived_at), len(smtp.sink.mail)
    down_at = time.time()
    smtp.stop()
    critical = {"severity": "critical", "subject": "critical during outage"}
    if traffic:
        client.post("/v1/notifications", json=critical)
    wait(lambda: state() == "outage", "outage")
    declared_at = transition_at(client, "outage")
    if not traffic:
        client.post("/v1/notifications", json=critical)
    wait(lambda: len(hook.arrived_at) > hooks, "backup delivery")
    client.post("/v1/notifications", json={"severity": "warning", "subject": "held until recovery"})
    up_at = time.time()
    smtp.start()
    wait(lambda: state() == "healthy", "recovery")
    recovered_at = transition_at(client, "healthy")
    wait(lambda: len(smtp.sink.mail) > mails, "held mail")
    return {
        "declared": declared_at - down_at,
        "backup": hook.arrived_at[hooks] - declared_at,
        "recovered": recovered_at - up_at,
        "held_mail": smtp.sink.mail[mails].arrived_at - recovered_at,
    }


async def _start_hook(hook: WebhookReceiver) -> None:
    await hook.start()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()
    smtp = SmtpProvider(free_port())
    smtp.start()
    hook = WebhookReceiver("whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3")
    loop = asyncio.new_event_loop()
    import threading

    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(_start_hook(hook), loop).result()
    hook_url = f"http://127.0.0.1:{hook.port}/hook"
    with (
        tempfile.TemporaryDirectory() as tmp,
        DaemonUnderTest(
            Path(tmp),
            routes="failover",
            every=f"{EVERY_S:g}s",
            hook_url=hook_url,
            smtp=smtp,
            webhook_secret=hook.secret,
        ) as daemon,
    ):
        client = httpx.Client(base_url=daemon.url, headers={"Authorization": f"Bearer {daemon.token}"})
        for traffic in (False, True):
            print("checks only (no mail in flight):" if not traffic else "with a critical mail in flight:")
            results = [cycle(client, smtp, hook, traffic) for _ in range(args.cycles)]
            for n, r in enumerate(results, 1):
                print(
                    f"  cycle {n}: outage declared {r['declared']:.2f}s after the provider went down, "
                    f"backup delivery {r['backup'] * 1000:.0f} ms after; recovery confirmed "
                    f"{r['recovered']:.2f}s after it came back, "
                    f"held mail {r['held_mail'] * 1000:.0f} ms after"
                )
            summarise(results)
    smtp.stop()


def summarise(results: list[dict[str, float]]) -> None:
    budget = THRESHOLD * EVERY_S + 1
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    worst = {k: max(r[k] for r in results) for k in results[0]}
    print(
        f"  median: declared {med['declared']:.2f}s (worst {worst['declared']:.2f}s, target <= {budget:g}s); "
        f"backup {med['backup'] * 1000:.0f} ms (worst {worst['backup'] * 1000:.0f} ms, target <= 1000 ms); "
        f"recovery {med['recovered']:.2f}s; held mail {med['held_mail'] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
