"""The HTTP API refuses the labels a channel threads by, over a real socket."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.integration.test_api import TOKEN, make_daemon
from tests.servers import SmtpServer, WebhookReceiver


async def test_slack_thread_ts_label_gets_422(tmp_path: Path) -> None:
    """A caller cannot name the Slack channel and thread a notification goes to: 422, nothing stored."""
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        daemon = make_daemon(tmp_path / "outbox.db", smtp, hook)
        await daemon.start()
        try:
            base, headers = f"http://127.0.0.1:{daemon.api_port}", {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(base_url=base, headers=headers) as c:
                note = {"severity": "critical", "subject": "x", "labels": {"slack_thread_ts": "C0HR:1.2"}}
                response = await c.post("/v1/notifications", json=note)
                assert response.status_code == 422
                assert response.json()["details"][0]["field"] == "body.labels"
                assert (await c.get("/v1/status")).json()["queue"]["notifications"] == {}
        finally:
            await daemon.stop()
