"""The rest of the HTTP API: listing with filters and cursors, cancelling, token scopes, rate limits."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon.app import Daemon
from tests.integration.test_webhook_intake import AM_BODY
from tests.servers import SmtpServer, WebhookReceiver
from tests.support import api_client, running

ADMIN, SENDER, READER, LIMITED, SLOW = (
    "admin-token-123456",
    "sender-token-123456",
    "reader-token-123456",
    "limited-12345678",
    "slow-token-12345678",
)
SECRET = "whsec_" + base64.b64encode(b"api-complete-webhook-secret").decode()
CONFIG = """\
store: {{path: {store}}}
api:
  listen: 127.0.0.1:0
  tokens:
    - {{name: admin, token: "{admin}"}}
    - {{name: ci, token: "{sender}", scopes: [send]}}
    - {{name: grafana-board, token: "{reader}", scopes: [read]}}
    - {{name: noisy, token: "{limited}", scopes: [send], rate_limit: {{per_second: 1, burst: 3}}}}
    - {{name: slow, token: "{slow}", scopes: [send, read], rate_limit: {{per_second: 0.01, burst: 3}}}}
provider:
  name: p
  smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false}}
  mail_from: bc@test.example
  checks: [{{type: smtp, every: 1h, timeout: 2s}}]
channels:
  email: {{type: email, to: [ops@test.example]}}
  hook: {{type: webhook, url: "{hook_url}", secret: "{secret}", allow_private: true}}
routes:
  - {{match: {{severity: [critical]}}, healthy: [email], outage: [hook]}}
  - {{match: {{}}, healthy: [email], outage: defer}}
"""


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        text = CONFIG.format(
            store=tmp_path / "o.db",
            smtp_port=smtp.port,
            hook_url=hook.url,
            secret=SECRET,
            admin=ADMIN,
            sender=SENDER,
            reader=READER,
            limited=LIMITED,
            slow=SLOW,
        )
        async with running(text) as started:
            yield started


async def test_list_filters_and_pages(daemon: Daemon) -> None:
    """GET /v1/notifications filters by status and severity and pages with a cursor, newest first."""
    async with api_client(daemon, ADMIN) as api:
        await api.post("/v1/provider/override", json={"state": "outage"})
        batch = [{"severity": "warning", "subject": f"held {i}"} for i in range(5)]
        await api.post("/v1/notifications", json=batch)
        await api.post("/v1/notifications", json={"severity": "info", "subject": "other"})
        first = (await api.get("/v1/notifications", params={"severity": "warning", "limit": 3})).json()
        second = (
            await api.get(
                "/v1/notifications",
                params={"severity": "warning", "limit": 3, "cursor": first["next_cursor"]},
            )
        ).json()
        held = (await api.get("/v1/notifications", params={"status": "held"})).json()
        future = (await api.get("/v1/notifications", params={"since": "2999-01-01T00:00:00Z"})).json()
        bad = await api.get("/v1/notifications", params={"status": "lost"})
    subjects = [n["subject"] for n in first["items"] + second["items"]]
    assert subjects == [f"held {i}" for i in (4, 3, 2, 1, 0)]
    assert second["next_cursor"] is None
    assert len(held["items"]) == 6
    assert future["items"] == []
    assert bad.status_code == 422


async def test_cancel_pending_but_not_finished(daemon: Daemon) -> None:
    """A held notification can be cancelled (and is never sent); a delivered one cannot."""
    async with api_client(daemon, ADMIN) as api:
        await api.post("/v1/provider/override", json={"state": "outage"})
        held = (await api.post("/v1/notifications", json={"severity": "info", "subject": "x"})).json()["id"]
        cancelled = await api.post(f"/v1/notifications/{held}/cancel")
        again = await api.post(f"/v1/notifications/{held}/cancel")
        missing = await api.post("/v1/notifications/NOPE/cancel")
        await api.delete("/v1/provider/override")
        status = (await api.get(f"/v1/notifications/{held}")).json()["status"]
    assert cancelled.json() == {"id": held, "status": "cancelled"}
    assert again.status_code == 409
    assert "already finished" in again.json()["message"]
    assert missing.status_code == 404
    assert status == "cancelled"


@pytest.mark.parametrize(
    ("token", "method", "path", "allowed"),
    [
        (SENDER, "POST", "/v1/notifications", True),
        (SENDER, "GET", "/v1/status", False),
        (SENDER, "POST", "/v1/provider/override", False),
        (READER, "GET", "/v1/status", True),
        (READER, "GET", "/metrics", True),
        (READER, "POST", "/v1/notifications", False),
        (READER, "POST", "/v1/drills", False),
    ],
)
async def test_token_scopes(daemon: Daemon, token: str, method: str, path: str, allowed: bool) -> None:
    """Each token can do what its scopes allow and gets a 403 naming the missing scope otherwise."""
    body: dict[str, Any] = (
        {"severity": "info", "subject": "x"} if path == "/v1/notifications" else {"state": "outage"}
    )
    async with api_client(daemon, token) as api:
        response = await api.request(method, path, json=body if method == "POST" else None)
    if allowed:
        assert response.status_code < 400, response.text
    else:
        assert response.status_code == 403
        assert "scope" in response.json()["message"]


async def test_rate_limit_answers_429_with_retry_after(daemon: Daemon) -> None:
    """A token over its rate limit gets 429 with Retry-After; other tokens are not affected."""
    async with api_client(daemon, LIMITED) as noisy, api_client(daemon, SENDER) as other:
        codes = [
            (await noisy.post("/v1/notifications", json={"severity": "info", "subject": f"{i}"}))
            for i in range(5)
        ]
        unaffected = await other.post("/v1/notifications", json={"severity": "info", "subject": "fine"})
    assert [r.status_code for r in codes[:3]] == [202, 202, 202]
    limited = [r for r in codes if r.status_code == 429]
    assert limited
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert limited[0].json()["error"] == "rate_limited"
    assert unaffected.status_code == 202


async def test_a_tokens_one_bucket_counts_every_endpoint(daemon: Daemon) -> None:
    """Submissions, webhooks, reads and the status page take from one bucket a token (3, then one
    per 100 s)."""
    async with api_client(daemon, SLOW) as slow:
        first = await slow.post("/v1/notifications", json={"severity": "info", "subject": "1"})
        second = await slow.post("/v1/intake/alertmanager", json=AM_BODY)
        third = await slow.get("/v1/status")
        over = [
            await slow.post("/v1/notifications", json={"severity": "info", "subject": "2"}),
            await slow.post("/v1/intake/alertmanager", json=AM_BODY),
            await slow.get("/v1/status"),
            await slow.get("/"),  # the status page: 429 too, not a sign-in prompt
        ]
    assert [first.status_code, second.status_code, third.status_code] == [202, 202, 200], second.text
    assert [r.status_code for r in over] == [429, 503, 429, 429]  # the alert webhook's: a 503 (retried)
    assert all(int(r.headers["Retry-After"]) >= 90 and r.json()["error"] == "rate_limited" for r in over)
    async with api_client(daemon, ADMIN) as admin:
        metrics = (await admin.get("/metrics")).text
    assert 'backchannel_api_rate_limited_total{token="slow"} 4.0' in metrics
    assert 'backchannel_api_rate_limited_total{token="noisy"} 0.0' in metrics


async def test_an_override_on_a_node_that_does_not_lead_is_409(daemon: Daemon) -> None:
    """A follower (or a deposed leader) refuses to change the provider state with 409 and says why."""
    daemon.monitor.set_leading(False)
    async with api_client(daemon, ADMIN) as api:
        answer = await api.post("/v1/provider/override", json={"state": "outage", "reason": "drill"})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == "not_leader"
    assert "leader" in answer.json()["message"]
