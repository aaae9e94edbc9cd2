"""A real Prometheus Alertmanager posting to backchannel: firing, outage failover, and the resolution.

Alertmanager runs as a process (``tests/e2e/alertmanager.sh``), clustering off, its webhook
receiver pointed at the daemon, which runs in-process with a webhook backup channel. Skipped
when Alertmanager is not installed, unless CI=true, where the script installs it or the test fails.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.app import Daemon
from daemon.config import parse_config
from tests.servers import ReceivedRequest, SmtpServer, WebhookReceiver

SCRIPT = Path(__file__).with_name("alertmanager.sh")
TOKEN = "e2e-alertmanager-token-0123456789"
SECRET = "whsec_" + base64.b64encode(b"e2e-alertmanager-secret-0123").decode()
CONFIG = """\
store: {{path: {store}}}
api: {{listen: 127.0.0.1:0, tokens: [{{name: alertmanager, token: "${{TOKEN}}"}}]}}
provider:
  name: test-provider
  smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false}}
  mail_from: backchannel@test.example
  checks: [{{type: smtp, every: 1h, timeout: 2s}}]
channels:
  email: {{type: email, to: [ops@test.example]}}
  hook: {{type: webhook, url: "{hook_url}", secret: "${{SECRET}}", allow_private: true}}
routes:
  - {{match: {{severity: [critical]}}, healthy: [email], outage: [hook]}}
  - {{match: {{}}, healthy: [email], outage: defer}}
"""


def _installed() -> bool:
    return any(shutil.which(name) for name in ("prometheus-alertmanager", "alertmanager"))


@pytest.fixture(autouse=True)
def _alertmanager_available() -> None:
    if not _installed() and os.environ.get("CI") != "true":
        pytest.skip("Alertmanager is not installed (apt-get install prometheus-alertmanager); CI=true fails")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def servers() -> Iterator[tuple[SmtpServer, WebhookReceiver]]:
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        yield smtp, hook


@pytest.fixture
async def daemon(tmp_path: Path, servers: tuple[SmtpServer, WebhookReceiver]) -> AsyncIterator[Daemon]:
    smtp, hook = servers
    text = CONFIG.format(store=tmp_path / "outbox.db", smtp_port=smtp.port, hook_url=hook.url)
    running = Daemon(parse_config(text, env={"TOKEN": TOKEN, "SECRET": SECRET}))
    await running.start()
    yield running
    await running.stop()


async def _script(*args: str, env: dict[str, str] | None = None) -> None:
    # The daemon shares this event loop: never block it on the subprocess.
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), *args, env={**os.environ, **(env or {})}, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, stderr.decode()


@pytest.fixture(params=["bearer", "basic"])
async def alertmanager(
    request: pytest.FixtureRequest, tmp_path: Path, daemon: Daemon
) -> AsyncIterator[httpx.AsyncClient]:
    """Alertmanager sending to the daemon with bearer (http_config.authorization) or basic auth."""
    auth = (
        {"AM_BEARER_TOKEN": TOKEN}
        if request.param == "bearer"
        else {"AM_BASIC_USER": "alertmanager", "AM_BASIC_PASSWORD": TOKEN}
    )
    port, workdir = _free_port(), tmp_path / "alertmanager"
    workdir.mkdir()
    url = f"http://127.0.0.1:{daemon.api_port}/v1/intake/alertmanager"
    await _script("start", str(port), str(workdir), url, env=auth)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        await _script("stop", str(workdir))


def _alert(ends_at: datetime | None = None) -> list[dict[str, Any]]:
    alert: dict[str, Any] = {
        "labels": {"alertname": "CheckoutDown", "severity": "critical", "team": "payments"},
        "annotations": {"summary": "Checkout is failing", "runbook_url": "https://runbooks.example/checkout"},
        "generatorURL": "http://prometheus.example/graph?g0.expr=up",
    }
    if ends_at is not None:
        alert["endsAt"] = ends_at.isoformat()
    return [alert]


async def _api(daemon: Daemon) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.api_port}", headers=headers, timeout=10)


async def _notifications(client: httpx.AsyncClient, count: int, timeout_s: float = 30) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    while True:
        queue: dict[str, int] = (await client.get("/v1/status")).json()["queue"]["notifications"]
        if sum(queue.values()) >= count:
            return queue
        assert time.monotonic() < deadline, f"backchannel has {queue}, expected {count} notifications"
        await asyncio.sleep(0.1)


async def test_firing_alert_reaches_backchannel(
    alertmanager: httpx.AsyncClient, daemon: Daemon, servers: tuple[SmtpServer, WebhookReceiver]
) -> None:
    """An alert posted to Alertmanager's API becomes a backchannel notification, sent by email."""
    assert (await alertmanager.post("/api/v2/alerts", json=_alert())).status_code == 200
    [mail] = await servers[0].wait_for_async(1, timeout_s=30)
    assert b"[FIRING] CheckoutDown: Checkout is failing" in mail.data
    async with await _api(daemon) as client:
        assert await _notifications(client, 1) in ({"delivered": 1}, {"pending": 1})


async def test_outage_routes_alert_and_resolution_to_the_backup(
    alertmanager: httpx.AsyncClient, daemon: Daemon, servers: tuple[SmtpServer, WebhookReceiver]
) -> None:
    """With the provider forced into outage, the alert and then its resolution reach the webhook."""
    _, hook = servers
    async with await _api(daemon) as client:
        forced = await client.post("/v1/provider/override", json={"state": "outage", "reason": "e2e"})
        assert forced.json()["state"] == "outage"
        await alertmanager.post("/api/v2/alerts", json=_alert())
        [fired] = await hook.wait_for_async(1, timeout_s=30)
        await alertmanager.post("/api/v2/alerts", json=_alert(ends_at=datetime.now(UTC)))
        [_, done] = await hook.wait_for_async(2, timeout_s=30)
        first = (await client.get(f"/v1/notifications/{fired.json()['id']}")).json()
    _check_firing(fired)
    assert done.json()["labels"]["alert_status"] == "resolved"
    assert done.json()["labels"]["follows"] == first["idempotency_key"]
    assert done.json()["subject"] == "[RESOLVED] CheckoutDown: Checkout is failing"
    assert servers[0].messages == []


def _check_firing(request: ReceivedRequest) -> None:
    body = request.json()
    assert body["subject"] == "[FIRING] CheckoutDown: Checkout is failing"
    assert body["severity"] == "critical"
    assert body["source"] == "alertmanager"
    assert body["labels"]["team"] == "payments"
    assert body["labels"]["alert_status"] == "firing"
    assert "runbook_url = https://runbooks.example/checkout" in body["body"]


@pytest.fixture
async def group_daemon(tmp_path: Path, servers: tuple[SmtpServer, WebhookReceiver]) -> AsyncIterator[Daemon]:
    smtp, hook = servers
    text = CONFIG.format(store=tmp_path / "outbox.db", smtp_port=smtp.port, hook_url=hook.url)
    running = Daemon(
        parse_config(text + "intake: {alertmanager: {per: group}}\n", env={"TOKEN": TOKEN, "SECRET": SECRET})
    )
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def grouping_alertmanager(tmp_path: Path, group_daemon: Daemon) -> AsyncIterator[httpx.AsyncClient]:
    """Alertmanager grouping by alertname, as most deployments do."""
    port, workdir = _free_port(), tmp_path / "alertmanager"
    workdir.mkdir()
    url = f"http://127.0.0.1:{group_daemon.api_port}/v1/intake/alertmanager"
    await _script(
        "start", str(port), str(workdir), url, env={"AM_BEARER_TOKEN": TOKEN, "AM_GROUP_BY": "alertname"}
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        await _script("stop", str(workdir))


def _instance(name: str, ends_at: datetime | None = None) -> dict[str, Any]:
    [alert] = _alert(ends_at)
    alert["labels"] = {**alert["labels"], "instance": name}
    return alert


async def test_a_groups_partial_resolution_and_its_resolution_reach_the_backup(
    grouping_alertmanager: httpx.AsyncClient,
    group_daemon: Daemon,
    servers: tuple[SmtpServer, WebhookReceiver],
) -> None:
    """per: group, two alerts in one group, then one resolves, then the other: three versions of
    the group reach the backup (the partly resolved one was answered as a duplicate and lost), and
    the resolution threads under the version before it."""
    _, hook = servers
    async with await _api(group_daemon) as client:
        await client.post("/v1/provider/override", json={"state": "outage", "reason": "e2e"})
        await grouping_alertmanager.post("/api/v2/alerts", json=[_instance("a"), _instance("b")])
        await _wait_for_subject(hook, 1, "[FIRING:2] CheckoutDown")
        await grouping_alertmanager.post("/api/v2/alerts", json=[_instance("b", ends_at=datetime.now(UTC))])
        update = await _wait_for_subject(hook, 2, "[FIRING:1] CheckoutDown")
        await grouping_alertmanager.post("/api/v2/alerts", json=[_instance("a", ends_at=datetime.now(UTC))])
        done = await _wait_for_subject(hook, 3, "[RESOLVED] CheckoutDown")
        told = (await client.get(f"/v1/notifications/{update.json()['id']}")).json()
    assert "RESOLVED" in update.json()["body"] and "FIRING" in update.json()["body"]
    assert done.json()["labels"]["follows"] == told["idempotency_key"]
    assert done.json()["labels"]["supersedes"] == update.json()["labels"]["supersedes"]


async def _wait_for_subject(hook: WebhookReceiver, count: int, prefix: str) -> ReceivedRequest:
    """The ``count``-th request the backup received, which must start with ``prefix``."""
    received = await hook.wait_for_async(count, timeout_s=60)
    subjects = [r.json()["subject"] for r in received]
    assert subjects[count - 1].startswith(prefix), subjects
    return received[count - 1]


async def _subjects(hook: WebhookReceiver, count: int, timeout_s: float = 20) -> list[str]:
    """The subjects the backup received, once it has ``count`` (or the deadline passed)."""
    deadline = time.monotonic() + timeout_s
    while len(hook.requests) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return [r.json()["subject"] for r in hook.requests]


async def test_a_group_firing_again_with_its_start_time_is_told_again(
    grouping_alertmanager: httpx.AsyncClient,
    group_daemon: Daemon,
    servers: tuple[SmtpServer, WebhookReceiver],
) -> None:
    """per: group: an alert Alertmanager resolved (its sender went quiet past endsAt) that fires
    again with the same startsAt (Prometheus keeps ActiveAt) reaches the backup as a new firing."""
    _, hook = servers
    started = datetime.now(UTC) - timedelta(minutes=5)
    firing = [{**_instance("a"), "startsAt": started.isoformat()}]
    resolved = [{**firing[0], "endsAt": datetime.now(UTC).isoformat()}]
    async with await _api(group_daemon) as client:
        await client.post("/v1/provider/override", json={"state": "outage", "reason": "e2e"})
        await grouping_alertmanager.post("/api/v2/alerts", json=firing)
        assert [s[:17] for s in await _subjects(hook, 1)] == ["[FIRING:1] Checko"]
        await grouping_alertmanager.post("/api/v2/alerts", json=resolved)
        assert [s[:10] for s in await _subjects(hook, 2)] == ["[FIRING:1]", "[RESOLVED]"]
        await grouping_alertmanager.post("/api/v2/alerts", json=firing)
        told = await _subjects(hook, 3, timeout_s=10)
        assert [s[:10] for s in told] == ["[FIRING:1]", "[RESOLVED]", "[FIRING:1]"]
