"""Failover drills: every backup channel is exercised and reported, routing is untouched."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.app import Daemon
from daemon.config import ConfigError, parse_config
from tests.servers import ScriptedResponse, SmtpServer, WebhookReceiver

TOKEN = "drill-test-token-1234567"
SECRET = "whsec_" + base64.b64encode(b"drill-test-webhook-secret-x").decode()
CONFIG = """\
store: {{path: {store}}}
api: {{listen: "127.0.0.1:0", tokens: [{{name: t, token: "${{TOKEN}}"}}]}}
provider:
  name: p
  smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false}}
  mail_from: bc@test.example
  checks: [{{type: smtp, every: 1h, timeout: 2s}}]
channels:
  email: {{type: email, to: [ops@test.example]}}
  incident: {{type: webhook, url: "{good}", secret: "${{SECRET}}", allow_private: true}}
  legacy: {{type: webhook, url: "{gone}", secret: "${{SECRET}}", allow_private: true}}
routes:
  - {{name: critical, match: {{severity: [critical]}}, healthy: [email], outage: [incident, legacy]}}
  - {{name: rest, match: {{}}, healthy: [email], outage: defer}}
{extra}
"""


async def test_drill_reports_each_backup_channel(tmp_path: Path) -> None:
    """A drill reaches the working webhook, reports the gone one with its reason, and changes no state."""
    with SmtpServer() as smtp, WebhookReceiver() as good, WebhookReceiver() as gone:
        gone.respond(ScriptedResponse(status=410))
        text = CONFIG.format(
            store=tmp_path / "o.db", smtp_port=smtp.port, good=good.url, gone=gone.url, extra=""
        )
        daemon = Daemon(parse_config(text, env={"TOKEN": TOKEN, "SECRET": SECRET}))
        await daemon.start()
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{daemon.api_port}", headers=headers
            ) as api:
                started = (await api.post("/v1/drills", json={"routes": ["critical"]})).json()
                assert set(started["notifications"]) == {"incident", "legacy"}
                result = await _finished(api, started["drill"])
                status = (await api.get("/v1/status")).json()
                metrics = (await api.get("/metrics")).text
                unknown = await api.post("/v1/drills", json={"routes": ["nope"]})
        finally:
            await daemon.stop()
    by_channel = {c["channel"]: c for c in result["channels"]}
    assert by_channel["incident"]["status"] == "delivered"
    assert by_channel["legacy"]["status"] == "failed"
    assert "410" in by_channel["legacy"]["detail"]
    assert not result["ok"]
    (request,) = good.requests
    assert request.json()["drill"] is True
    assert status["provider"]["state"] == "healthy"
    assert status["last_drill"]["drill"] == started["drill"]
    assert 'backchannel_drill_success{channel="incident"} 1.0' in metrics
    assert 'backchannel_drill_success{channel="legacy"} 0.0' in metrics
    assert unknown.status_code == 422
    assert smtp.messages == []


async def _finished(api: httpx.AsyncClient, drill_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        result: dict[str, Any] = (await api.get(f"/v1/drills/{drill_id}")).json()
        if result["done"]:
            return result
        assert time.monotonic() < deadline, result
        await asyncio.sleep(0.05)


def test_scheduled_drill_config_is_validated(tmp_path: Path) -> None:
    """A bad crontab or an unknown route in drills: is a configuration error."""
    for extra, message in (
        ('drills: {schedule: "every monday"}', "crontab"),
        ('drills: {schedule: "0 10 1 * *", routes: [nope]}', "unknown routes: nope"),
    ):
        text = CONFIG.format(
            store=tmp_path / "o.db",
            smtp_port=25,
            good="http://a.example/h",
            gone="http://b.example/h",
            extra=extra,
        )
        with pytest.raises(ConfigError, match=message):
            parse_config(text, env={"TOKEN": TOKEN, "SECRET": SECRET})
    ok = CONFIG.format(
        store=tmp_path / "o.db",
        smtp_port=25,
        good="http://a.example/h",
        gone="http://b.example/h",
        extra='drills: {schedule: "0 10 1 * *", routes: [critical]}',
    )
    assert parse_config(ok, env={"TOKEN": TOKEN, "SECRET": SECRET}).drills is not None
