"""The Alertmanager and Grafana webhook endpoints over a real socket, the whole daemon in-process."""

from __future__ import annotations

import asyncio
import base64
import copy
import email
import email.policy
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.app import Daemon
from daemon.config import parse_config
from tests.servers import SmtpServer, WebhookReceiver

TOKEN = "webhook-intake-token-0123456789"
SECRET = "whsec_" + base64.b64encode(b"webhook-intake-secret-012345").decode()
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
intake:
  alertmanager: {{severity_label: severity, default_severity: warning, recipients: [oncall@test.example]}}
  grafana: {{per: group}}
"""

ALERT: dict[str, Any] = {
    "status": "firing",
    "labels": {"alertname": "ShopDown", "severity": "page", "team": "payments"},
    "annotations": {"summary": "Shop is down", "runbook_url": "https://runbooks.example/shop"},
    "startsAt": "2024-02-06T12:00:00.5Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "http://prometheus.example/graph",
    "fingerprint": "a1b2c3d4e5f60718",
}
AM_BODY: dict[str, Any] = {
    "version": "4",
    "groupKey": '{}:{alertname="ShopDown"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "backchannel",
    "groupLabels": {"alertname": "ShopDown"},
    "commonLabels": ALERT["labels"],
    "commonAnnotations": ALERT["annotations"],
    "externalURL": "http://alertmanager.example:9093",
    "alerts": [ALERT],
}
GRAFANA_BODY: dict[str, Any] = {
    **AM_BODY,
    "version": "1",
    "orgId": 1,
    "title": "[FIRING:1] ShopDown",
    "state": "alerting",
    "message": "",
    "alerts": [{**ALERT, "dashboardURL": "https://grafana.example/d/shop", "values": {"A": 0}}],
}


def resolved(body: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["status"] = "resolved"
    for alert in out["alerts"]:
        alert.update(status="resolved", endsAt="2024-02-06T12:30:00Z")
    return out


@pytest.fixture
def servers() -> Any:
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        yield smtp, hook


@pytest.fixture
async def api(tmp_path: Path, servers: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Daemon]]:
    smtp, hook = servers
    text = CONFIG.format(store=tmp_path / "outbox.db", smtp_port=smtp.port, hook_url=hook.url)
    daemon = Daemon(parse_config(text, env={"TOKEN": TOKEN, "SECRET": SECRET}))
    await daemon.start()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.api_port}", headers=headers) as client:
        yield client, daemon
    await daemon.stop()


async def trail(client: httpx.AsyncClient, nid: str, status: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        data: dict[str, Any] = (await client.get(f"/v1/notifications/{nid}")).json()
        if status is None or data["status"] == status:
            return data
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.05)


async def test_alertmanager_call_is_committed_as_a_notification(
    api: tuple[httpx.AsyncClient, Daemon], servers: Any
) -> None:
    """202 with the notification's id; it carries the mapped severity, subject, labels and recipients."""
    client, _ = api
    response = await client.post("/v1/intake/alertmanager", json=AM_BODY)
    assert response.status_code == 202
    (nid,) = response.json()["ids"]
    assert response.json()["duplicates"] == []
    [mail] = await servers[0].wait_for_async(1)
    assert mail.rcpt_tos == ("oncall@test.example",)
    assert b"[FIRING] ShopDown: Shop is down" in mail.data
    data = await trail(client, nid, "delivered")
    assert data["severity"] == "critical"
    assert data["source"] == "alertmanager"
    assert data["labels"]["team"] == "payments"


async def test_a_group_larger_than_the_api_body_limit_is_accepted_whole(
    api: tuple[httpx.AsyncClient, Daemon],
) -> None:
    """A fleet-wide group (1,200 alerts, past api.max_body_bytes' 1 MiB) is committed whole under
    the webhooks' own limit, api.max_alert_body_bytes; Alertmanager would repeat a 413 or 422 at
    every flush and never deliver it. Other endpoints keep the smaller limit."""
    client, _ = api
    alerts = [
        {**ALERT, "fingerprint": f"{n:016x}", "labels": {**ALERT["labels"], "instance": f"node-{n}"}}
        | {"annotations": {"summary": "Node down", "description": "d" * 900}}
        for n in range(1200)
    ]
    body = {**AM_BODY, "alerts": alerts}
    assert len(json.dumps(body)) > 1024 * 1024
    response = await client.post("/v1/intake/alertmanager", json=body)
    assert response.status_code == 202, response.text[:300]
    assert len(response.json()["ids"]) == 1200
    too_large = await client.post("/v1/notifications", content=b"x" * (1024 * 1024 + 1))
    assert too_large.status_code == 413


async def test_resend_is_a_duplicate(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """Alertmanager repeating the same firing alert returns the first id, marked duplicate."""
    client, _ = api
    first = (await client.post("/v1/intake/alertmanager", json=AM_BODY)).json()
    again = (await client.post("/v1/intake/alertmanager", json=AM_BODY)).json()
    assert again == {"ids": first["ids"], "duplicates": first["ids"]}


async def test_outage_sends_the_alert_and_its_resolution_to_the_backup(
    api: tuple[httpx.AsyncClient, Daemon], servers: Any
) -> None:
    """During an outage a critical alert reaches the webhook, then its resolution follows it."""
    client, _ = api
    await client.post("/v1/provider/override", json={"state": "outage", "reason": "drill"})
    await client.post("/v1/intake/alertmanager", json=AM_BODY)
    [fired] = await servers[1].wait_for_async(1)
    await client.post("/v1/intake/alertmanager", json=resolved(AM_BODY))
    [_, done] = await servers[1].wait_for_async(2)
    assert fired.json()["subject"] == "[FIRING] ShopDown: Shop is down"
    assert done.json()["labels"]["alert_status"] == "resolved"
    # The receiver links them by itself: the resolution names the key the firing one came with.
    assert done.json()["labels"]["follows"] == fired.json()["idempotency_key"]
    assert fired.json()["idempotency_key"] == (await trail(client, fired.json()["id"]))["idempotency_key"]


async def test_grafana_call_in_group_mode(api: tuple[httpx.AsyncClient, Daemon], servers: Any) -> None:
    """Grafana's payload is accepted; with per: group it is one notification for the call."""
    client, _ = api
    response = await client.post("/v1/intake/grafana", json=GRAFANA_BODY)
    assert response.status_code == 202
    (nid,) = response.json()["ids"]
    assert (await trail(client, nid))["source"] == "grafana"
    [mail] = await servers[0].wait_for_async(1)
    text = email.message_from_bytes(mail.data, policy=email.policy.default)
    body = text.get_body(preferencelist=("plain",))
    assert body is not None
    assert "Dashboard: https://grafana.example/d/shop" in body.get_content()


@pytest.mark.parametrize("path", ["/v1/intake/alertmanager", "/v1/intake/grafana"])
async def test_basic_auth_as_the_senders_send_it(api: tuple[httpx.AsyncClient, Daemon], path: str) -> None:
    """HTTP Basic with the token's name and the token is accepted, as http_config.basic_auth sends it."""
    client, _ = api
    body = AM_BODY if path.endswith("alertmanager") else GRAFANA_BODY
    async with httpx.AsyncClient(base_url=str(client.base_url)) as anonymous:
        response = await anonymous.post(path, json=body, auth=("alertmanager", TOKEN))
    assert response.status_code == 202


async def test_basic_auth_with_another_username_says_what_the_username_is(
    api: tuple[httpx.AsyncClient, Daemon],
) -> None:
    """The right token under another username (Grafana's form invites any) is refused with a
    message that names what the username must be."""
    client, _ = api
    basic = base64.b64encode(f"admin:{TOKEN}".encode()).decode()
    async with httpx.AsyncClient(base_url=str(client.base_url)) as anonymous:
        response = await anonymous.post(
            "/v1/intake/grafana", json=GRAFANA_BODY, headers={"Authorization": f"Basic {basic}"}
        )
    assert response.status_code == 401
    assert "the username is the token's name in api.tokens" in response.json()["message"]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong",
        "Basic " + base64.b64encode(f"someone-else:{TOKEN}".encode()).decode(),
        "Basic " + base64.b64encode(b"alertmanager:wrong").decode(),
        "Basic not-base64!",
    ],
)
async def test_bad_credentials_are_401(
    api: tuple[httpx.AsyncClient, Daemon], authorization: str | None
) -> None:
    """Missing, wrong or malformed credentials get 401 with both challenges, and nothing is stored."""
    client, _ = api
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(base_url=str(client.base_url)) as anonymous:
        response = await anonymous.post("/v1/intake/alertmanager", json=AM_BODY, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    if authorization is None:  # either scheme is welcome, and the answer says so
        assert response.json()["message"] == "missing bearer token or basic credentials"
    assert "Basic" in response.headers["WWW-Authenticate"]
    assert (await client.get("/v1/status")).json()["queue"]["notifications"] == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**AM_BODY, "version": "3"}, "body.version"),
        ({**AM_BODY, "alerts": [{"status": "firing"}]}, "body.alerts.0.startsAt"),
        ({"title": "legacy grafana", "evalMatches": []}, "body.alerts"),
    ],
)
async def test_bad_payload_is_422_with_the_field(
    api: tuple[httpx.AsyncClient, Daemon], body: dict[str, Any], field: str
) -> None:
    """A body that is not the sender's format is a 422 naming the field."""
    client, _ = api
    response = await client.post("/v1/intake/alertmanager", json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert any(d["field"] == field for d in response.json()["details"]), response.json()


@pytest.mark.parametrize("path", ["/v1/intake/alertmanager", "/v1/intake/grafana"])
@pytest.mark.parametrize(
    ("times", "field"),
    [
        ({"startsAt": "0001-01-01T00:30:00+01:00"}, "body.alerts.0.startsAt"),
        ({"status": "resolved", "endsAt": "9999-12-31T23:00:00-05:00"}, "body.alerts.0.endsAt"),
    ],
)
async def test_a_time_outside_utcs_range_is_422_with_the_field(
    api: tuple[httpx.AsyncClient, Daemon], path: str, times: dict[str, str], field: str
) -> None:
    """A time that has no UTC equivalent (year 1 east of Greenwich) is a 422 naming it, not a 500."""
    client, _ = api
    body = {**(AM_BODY if path.endswith("alertmanager") else GRAFANA_BODY)}
    body["alerts"] = [{**body["alerts"][0], **times}]
    response = await client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert any(d["field"] == field for d in response.json()["details"]), response.json()


async def test_malformed_json_is_422(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """Bytes that are not JSON are refused with a reason."""
    client, _ = api
    response = await client.post("/v1/intake/grafana", content=b"{nope")
    assert response.status_code == 422
    assert "JSON" in response.json()["message"]


async def test_answers_are_json_with_their_length(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """Accepted and refused calls alike answer JSON with a Content-Length, on one kept-alive connection."""
    client, _ = api
    answers = [
        await client.post("/v1/intake/alertmanager", json=AM_BODY),
        await client.post("/v1/intake/alertmanager", json={**AM_BODY, "version": "3"}),
        await client.post("/v1/intake/grafana", content=b"{nope"),
        await client.post("/v1/intake/grafana", json=GRAFANA_BODY),
    ]
    assert [a.status_code for a in answers] == [202, 422, 422, 202]
    for answer in answers:
        assert answer.headers["content-type"] == "application/json"
        assert int(answer.headers["content-length"]) == len(answer.content)
        assert isinstance(answer.json(), dict)


async def test_failed_commit_is_503_with_retry_after(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """When the store cannot commit, 503 + Retry-After tells Alertmanager to retry; nothing is kept."""
    client, daemon = api
    pages = await daemon.store._writer.run(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
    await daemon.store._writer.run(lambda conn: conn.execute(f"PRAGMA max_page_count={pages}"))
    many = {
        **AM_BODY,
        "alerts": [
            {**ALERT, "fingerprint": f"{i:016x}", "annotations": {"description": "x" * 4000}}
            for i in range(50)
        ],
    }
    response = await client.post("/v1/intake/alertmanager", json=many)
    assert response.status_code == 503
    assert response.json()["error"] == "store_unavailable"
    assert response.headers["Retry-After"] == "5"
    assert (await client.get("/v1/status")).json()["queue"]["notifications"] == {}


async def test_draining_is_503(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """While the daemon drains, the webhooks answer 503 so the senders retry elsewhere or later."""
    client, daemon = api
    daemon.draining = True
    response = await client.post("/v1/intake/alertmanager", json=AM_BODY)
    daemon.draining = False
    assert response.status_code == 503
    assert response.json()["error"] == "draining"


async def test_openapi_describes_the_webhooks(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """/openapi.json documents both endpoints with their bodies, answers and both auth schemes."""
    client, _ = api
    spec = (await client.get("/openapi.json")).json()
    for path in ("/v1/intake/alertmanager", "/v1/intake/grafana"):
        operation = spec["paths"][path]["post"]
        assert "alerts" in operation["requestBody"]["content"]["application/json"]["schema"]["properties"]
        assert set(operation["responses"]) >= {"202", "401", "422", "503"}
        assert {"bearer": []} in operation["security"] and {"basic": []} in operation["security"]
    assert spec["components"]["securitySchemes"]["basic"]["scheme"] == "basic"
    assert "$defs" not in str([spec["paths"]["/v1/intake/alertmanager"], spec["paths"]["/v1/intake/grafana"]])
