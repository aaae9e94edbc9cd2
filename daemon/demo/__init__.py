"""``backchannel demo``: a visible failover and recovery, on the embedded defaults, in under a minute.

The real daemon runs in this process (SQLite store in a temporary directory) against local
stand-ins: an SMTP server playing the email provider and a webhook receiver playing the backup.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import socket
import sys
import tempfile
import time
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from daemon.demo.standins import SmtpProvider, WebhookReceiver

CONFIG = """\
store: {{path: {store}}}
api:
  listen: 127.0.0.1:0
  tokens: [{{name: demo, token: "${{DEMO_TOKEN}}"}}]
provider:
  name: demo-provider
  smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false, timeout: 2s}}
  mail_from: backchannel@demo.example
  checks: [{{type: smtp, every: 500ms, timeout: 400ms}}]
  failure_threshold: 3
  success_threshold: 3
channels:
  email: {{type: email, to: [oncall@demo.example]}}
  incident:
    type: webhook
    url: "http://127.0.0.1:{hook_port}/hook"
    secret: "${{DEMO_WEBHOOK_SECRET}}"
    allow_private: true            # the demo's receiver is on loopback, which is refused by default
routes:
  - name: critical
    match: {{severity: [critical, high]}}
    healthy: [email]
    outage: [incident]
  - name: everything-else
    match: {{}}
    healthy: [email]
    outage: defer
dispatch:
  poll: 250ms
  retry: {{initial: 200ms, max: 2s, max_attempts: 20}}
"""

DEADLINE_S = 20.0


class _Timeline:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.2f}s] {text}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _until(predicate: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await _maybe_await(predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def _maybe_await(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


async def _demo(workdir: Path) -> None:
    from daemon.app import Daemon
    from daemon.config import parse_config

    say = _Timeline().say
    token, hook_secret = secrets.token_urlsafe(24), "whsec_" + b64encode(secrets.token_bytes(24)).decode()
    provider = SmtpProvider(_free_port())
    provider.start()
    hook = WebhookReceiver(hook_secret)
    await hook.start()
    text = CONFIG.format(store=workdir / "backchannel.db", smtp_port=provider.port, hook_port=hook.port)
    config = parse_config(
        text, filename="demo.yaml", env={"DEMO_TOKEN": token, "DEMO_WEBHOOK_SECRET": hook_secret}
    )
    daemon = Daemon(config)
    await daemon.start()
    say(
        f"daemon ready: API on 127.0.0.1:{daemon.api_port}, provider SMTP on 127.0.0.1:{provider.port}, "
        f"webhook backup on 127.0.0.1:{hook.port}"
    )
    api = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{daemon.api_port}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        await _story(say, daemon, provider, hook, api)
    finally:
        await api.aclose()
        await daemon.stop()
        await hook.stop()
        provider.stop()


async def _send(api: httpx.AsyncClient, severity: str, subject: str) -> str:
    response = await api.post("/v1/notifications", json={"severity": severity, "subject": subject})
    response.raise_for_status()
    notification_id: str = response.json()["id"]
    return notification_id


async def _status(api: httpx.AsyncClient, notification_id: str) -> str:
    status: str = (await api.get(f"/v1/notifications/{notification_id}")).json()["status"]
    return status


@dataclass(frozen=True, slots=True)
class _Scene:
    """What the story's steps act on: the daemon, its two stand-ins, a client of its API."""

    say: Callable[[str], None]
    daemon: Any
    provider: SmtpProvider
    hook: WebhookReceiver
    api: httpx.AsyncClient


async def _story(
    say: Callable[[str], None],
    daemon: Any,
    provider: SmtpProvider,
    hook: WebhookReceiver,
    api: httpx.AsyncClient,
) -> None:
    scene = _Scene(say, daemon, provider, hook, api)
    await _while_healthy(scene)
    await _provider_goes_down(scene)
    held = await _during_outage(scene)
    await _provider_comes_back(scene, held)
    say("demo finished: nothing lost, critical mail went around the outage, the rest waited for recovery")


async def _while_healthy(scene: _Scene) -> None:
    """Both notifications go by email."""
    scene.say("provider healthy: sending a critical and an info notification")
    await _send(scene.api, "critical", "Database primary failed over")
    await _send(scene.api, "info", "Nightly backup finished")
    await _until(lambda: len(scene.provider.sink.mail) >= 2, "email delivery")
    for mail in scene.provider.sink.mail:
        scene.say(f"  delivered by EMAIL: {mail.subject}")


async def _provider_goes_down(scene: _Scene) -> None:
    """The checks fail until the daemon declares an outage."""
    scene.say("provider goes DOWN (its SMTP port now refuses connections)")
    down_at = time.monotonic()
    scene.provider.stop()
    await _until(lambda: scene.daemon.monitor.state.value == "outage", "outage declaration")
    scene.say(
        f"OUTAGE declared after {config_threshold(scene.daemon)} failed checks "
        f"({time.monotonic() - down_at:.1f}s after the provider went down)"
    )


async def _during_outage(scene: _Scene) -> str:
    """Critical and high go by webhook, the warning is held: return the held notification's id."""
    scene.say("during the outage: sending critical, high and warning notifications")
    held = await _send(scene.api, "warning", "Disk 80% full on web-3")
    await _send(scene.api, "critical", "Payments API error rate 12%")
    await _send(scene.api, "high", "Replica lag above 30s")
    await _until(lambda: len(scene.hook.received) >= 2, "webhook delivery")
    for body, ok in zip(scene.hook.received, scene.hook.signatures_ok, strict=True):
        scene.say(
            f"  delivered by WEBHOOK (signature {'valid' if ok else 'INVALID'}): "
            f"[{body['severity']}] {body['subject']}"
        )
    scene.say(f"  warning notification is {await _status(scene.api, held)} until the provider recovers")
    return held


async def _provider_comes_back(scene: _Scene, held: str) -> None:
    """The daemon confirms the recovery, then the held notification goes by email."""
    scene.say("provider comes BACK")
    up_at = time.monotonic()
    mail_before = len(scene.provider.sink.mail)
    scene.provider.start()
    await _until(lambda: scene.daemon.monitor.state.value == "healthy", "recovery")
    scene.say(
        f"RECOVERY confirmed ({time.monotonic() - up_at:.1f}s after the provider came back: "
        f"{scene.daemon.config.provider.success_threshold} good checks in a row, and after so short an "
        "outage flap damping waits for its window of recent results to settle)"
    )
    await _until(lambda: len(scene.provider.sink.mail) > mail_before, "held mail")
    for mail in scene.provider.sink.mail[mail_before:]:
        scene.say(f"  held mail delivered by EMAIL: {mail.subject}")
    await _until(lambda: _delivered(scene.api, held), "the held notification's outcome")
    scene.say(f"  warning notification is now {await _status(scene.api, held)}")


async def _delivered(api: httpx.AsyncClient, notification_id: str) -> bool:
    return await _status(api, notification_id) == "delivered"


def config_threshold(daemon: Any) -> int:
    threshold: int = daemon.config.provider.failure_threshold
    return threshold


def run_demo(*, keep: bool = False) -> int:
    from daemon.cli import run_async

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("           daemon log: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)

    workdir = Path(tempfile.mkdtemp(prefix="backchannel-demo-"))
    try:
        run_async(_demo(workdir))
    finally:
        if keep:
            print(f"demo files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0
