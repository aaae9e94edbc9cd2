"""Failover drills: every backup channel is exercised and reported, routing is untouched."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.config import ConfigError, parse_config
from tests.servers import ScriptedResponse, SmtpServer, WebhookReceiver
from tests.support import config_template, daemon_api, until

TOKEN = "drill-test-token-1234567"
SECRET = "whsec_" + base64.b64encode(b"drill-test-webhook-secret-x").decode()
ENV = {"TOKEN": TOKEN, "SECRET": SECRET}
CONFIG = config_template("""\
  incident: {{type: webhook, url: "{good}", secret: "${{SECRET}}", allow_private: true}}
  legacy: {{type: webhook, url: "{gone}", secret: "${{SECRET}}", allow_private: true}}
routes:
  - {{name: critical, match: {{severity: [critical]}}, healthy: [email], outage: [incident, legacy]}}
  - {{name: rest, match: {{}}, healthy: [email], outage: defer}}
{extra}
""")


async def test_drill_reports_each_backup_channel(tmp_path: Path) -> None:
    """A drill reaches the working webhook, reports the gone one with its reason, and changes no state."""
    with SmtpServer() as smtp, WebhookReceiver() as good, WebhookReceiver() as gone:
        gone.respond(ScriptedResponse(status=410))
        text = _config(tmp_path, smtp.port, good.url, gone.url)
        async with daemon_api(text, TOKEN, ENV) as (_, api):
            started = (await api.post("/v1/drills", json={"routes": ["critical"]})).json()
            assert set(started["notifications"]) == {"incident", "legacy"}
            result = await _finished(api, started["drill"])
            status = (await api.get("/v1/status")).json()
            metrics = (await api.get("/metrics")).text
            unknown = await api.post("/v1/drills", json={"routes": ["nope"]})
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


async def test_drill_metrics_survive_a_restart(tmp_path: Path) -> None:
    """After a restart the drill gauges still show the last drill, read from the store: not a
    timestamp of 0 (BackchannelNoRecentDrill firing) nor a failed channel forgotten."""
    with SmtpServer() as smtp, WebhookReceiver() as good, WebhookReceiver() as gone:
        gone.respond(ScriptedResponse(status=410))
        text = _config(tmp_path, smtp.port, good.url, gone.url)
        async with daemon_api(text, TOKEN, ENV) as (_, api):
            started = (await api.post("/v1/drills", json={"routes": ["critical"]})).json()
            await _finished(api, started["drill"])
            before = (await api.get("/metrics")).text
        async with daemon_api(text, TOKEN, ENV) as (_, api):
            after = (await api.get("/metrics")).text
    assert 'backchannel_drill_success{channel="incident"} 1.0' in after
    assert 'backchannel_drill_success{channel="legacy"} 0.0' in after
    (timestamp,) = [
        line for line in after.splitlines() if line.startswith("backchannel_drill_timestamp_seconds ")
    ]
    assert timestamp in before
    assert float(timestamp.split()[1]) > 0


async def _finished(api: httpx.AsyncClient, drill_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        result: dict[str, Any] = (await api.get(f"/v1/drills/{drill_id}")).json()
        return result if result["done"] else None

    return await until(done)


def _config(tmp_path: Path, smtp_port: int, good: str, gone: str, extra: str = "") -> str:
    return CONFIG.format(
        store=tmp_path / "o.db", api_port=0, smtp_port=smtp_port, good=good, gone=gone, extra=extra
    )


def test_scheduled_drill_config_is_validated(tmp_path: Path) -> None:
    """A bad crontab or an unknown route in drills: is a configuration error."""
    for extra, message in (
        ('drills: {schedule: "every monday"}', "crontab"),
        ('drills: {schedule: "0 10 1 * *", routes: [nope]}', "unknown routes: nope"),
    ):
        text = _config(tmp_path, 25, "http://a.example/h", "http://b.example/h", extra)
        with pytest.raises(ConfigError, match=message):
            parse_config(text, env=ENV)
    schedule = 'drills: {schedule: "0 10 1 * *", routes: [critical]}'
    ok = _config(tmp_path, 25, "http://a.example/h", "http://b.example/h", schedule)
    assert parse_config(ok, env=ENV).drills is not None
