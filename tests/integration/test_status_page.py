"""The status page, rendered by headless Chromium during a simulated outage."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx

from tests.servers import SmtpServer, WebhookReceiver
from tests.support import daemon_api, installed, until

TOKEN = "status-page-token-0123456"
SECRET = "whsec_" + base64.b64encode(b"status-page-webhook-secret").decode()
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CONFIG = """\
store: {{path: {store}}}
api: {{listen: "127.0.0.1:0", tokens: [{{name: ops, token: "${{TOKEN}}"}}]}}
provider:
  name: exchange-online
  smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false, timeout: 1s}}
  mail_from: bc@test.example
  checks: [{{type: smtp, every: 200ms, timeout: 150ms}}]
  failure_threshold: 2
  success_threshold: 2
channels:
  email: {{type: email, to: [ops@test.example]}}
  incident: {{type: webhook, url: "{hook_url}", secret: "${{SECRET}}", allow_private: true}}
routes:
  - {{match: {{severity: [critical]}}, healthy: [email], outage: [incident]}}
  - {{match: {{}}, healthy: [email], outage: defer}}
"""


def chromium() -> str:
    return installed("chromium", "chromium-browser", package="chromium")


async def headless(browser: str, url: str, *args: str, profile: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1280,1800",
        *args,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 90)
    return out.decode()


async def test_status_page_shows_the_outage(tmp_path: Path) -> None:
    """In an outage the page says OUTAGE and why, draws the timeline, lists the trail; saves a screenshot."""
    browser = chromium()
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        text = CONFIG.format(store=tmp_path / "o.db", smtp_port=smtp.port, hook_url=hook.url)
        async with daemon_api(text, TOKEN, {"TOKEN": TOKEN, "SECRET": SECRET}) as (daemon, api):
            await api.post("/v1/notifications", json={"severity": "info", "subject": "before the outage"})
            await smtp.wait_for_async(1)
            smtp.stop()
            await until(lambda: daemon.monitor.state.value == "outage", 15)
            await api.post("/v1/notifications", json={"severity": "critical", "subject": "Payments <down>"})
            await hook.wait_for_async(1)
            async with httpx.AsyncClient() as anonymous:
                refused = await anonymous.get(f"http://127.0.0.1:{daemon.api_port}/")
            url = f"http://ops:{TOKEN}@127.0.0.1:{daemon.api_port}/"
            dom = await headless(browser, url, "--dump-dom", profile=tmp_path / "profile-dom")
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "status-page-outage.png"
            shot.unlink(missing_ok=True)
            await headless(browser, url, f"--screenshot={shot}", profile=tmp_path / "profile-shot")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Basic")
    assert "exchange-online" in dom
    assert ">OUTAGE<" in dom
    assert "2 failing rounds" in dom
    assert 'class="check"' in dom
    assert "Payments &lt;down&gt;" in dom
    assert "incident: delivered" in dom
    assert shot.stat().st_size > 10_000
