"""The HTTP API over a real socket, with the whole daemon running in-process."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.app import Daemon
from daemon.config import parse_config
from daemon.store.base import StoreUnavailable
from tests.servers import SmtpServer, WebhookReceiver
from tests.support import until

TOKEN = "api-test-token-0123456789"
SECRET = "whsec_" + base64.b64encode(b"api-test-webhook-secret-0123").decode()
CONFIG = """\
store: {{path: {store}}}
api: {{listen: 127.0.0.1:0, tokens: [{{name: test, token: "${{TOKEN}}"}}], max_body_bytes: {max_body}}}
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


@pytest.fixture
def servers() -> Any:
    with SmtpServer() as smtp, WebhookReceiver() as hook:
        yield smtp, hook


def make_daemon(store: Path, smtp: SmtpServer, hook: WebhookReceiver, max_body: int = 1 << 20) -> Daemon:
    text = CONFIG.format(store=store, smtp_port=smtp.port, hook_url=hook.url, max_body=max_body)
    return Daemon(parse_config(text, env={"TOKEN": TOKEN, "SECRET": SECRET}))


async def start_daemon(
    store: Path, smtp: SmtpServer, hook: WebhookReceiver, max_body: int = 1 << 20
) -> Daemon:
    daemon = make_daemon(store, smtp, hook, max_body)
    await daemon.start()
    return daemon


@pytest.fixture
async def api(tmp_path: Path, servers: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Daemon]]:
    smtp, hook = servers
    daemon = await start_daemon(tmp_path / "outbox.db", smtp, hook, max_body=256 * 1024)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.api_port}", headers=headers) as client:
        yield client, daemon
    await daemon.stop()


NOTE = {"severity": "critical", "subject": "Payments API down", "recipients": ["oncall@test.example"]}


async def test_submit_returns_id_and_trail(api: tuple[httpx.AsyncClient, Daemon], servers: Any) -> None:
    """202 with an id; the notification's trail shows its email delivery."""
    client, _ = api
    response = await client.post("/v1/notifications", json=NOTE)
    assert response.status_code == 202
    nid = response.json()["id"]
    await servers[0].wait_for_async(1)
    trail = await _eventually(client, nid, "delivered")
    assert trail["plan"] == ["email"]
    assert trail["attempts"][0]["channel"] == "email"
    assert trail["attempts"][0]["outcome"] == "delivered"


async def _eventually(client: httpx.AsyncClient, nid: str, status: str) -> dict[str, Any]:
    import asyncio
    import time

    deadline = time.monotonic() + 10
    while True:
        data: dict[str, Any] = (await client.get(f"/v1/notifications/{nid}")).json()
        if data["status"] == status:
            return data
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer"])
async def test_intake_needs_a_valid_token(api: tuple[httpx.AsyncClient, Daemon], header: str | None) -> None:
    """Without a valid bearer token the API answers 401 and accepts nothing."""
    client, _ = api
    headers = {} if header is None else {"Authorization": header}
    async with httpx.AsyncClient(base_url=str(client.base_url)) as anonymous:
        response = await anonymous.post("/v1/notifications", json=NOTE, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert (await client.get("/v1/status")).json()["queue"]["notifications"] == {}


async def test_reads_need_a_token_too(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """The status and trail endpoints are not public."""
    client, _ = api
    async with httpx.AsyncClient(base_url=str(client.base_url)) as anonymous:
        assert (await anonymous.get("/v1/status")).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"severity": "urgent", "subject": "x"}, "body.severity"),
        ({"severity": "info"}, "body.subject"),
        ({"severity": "info", "subject": ""}, "body.subject"),
        ({"severity": "info", "subject": "x", "colour": "red"}, "body.colour"),
        *(
            ({"severity": "info", "subject": "x", "labels": {reserved: "k"}}, "body.labels")
            for reserved in ("resolves", "supersedes", "group_acknowledged")
        ),
        ([], "body"),
        ([{"severity": "info", "subject": "x"}, {"severity": "info"}], "body.1.subject"),
        ("a notification", "body.NotificationIn"),  # neither shape: both are told
    ],
)
async def test_bad_fields_get_422_with_the_reason(
    api: tuple[httpx.AsyncClient, Daemon], body: object, field: str
) -> None:
    """A bad request is a 422 naming the field by its place in the body and what is wrong with it;
    an object is not told what it lacks as a batch, nor a batch as one notification (the field was
    body.NotificationIn.subject, and the reason went on with body.list[NotificationIn]: Input should
    be a valid array)."""
    client, _ = api
    response = await client.post("/v1/notifications", json=body)
    assert response.status_code == 422
    data = response.json()
    assert data["error"] == "invalid_request"
    assert data["details"][0]["field"] == field, data
    if isinstance(body, dict | list):
        assert "NotificationIn" not in data["message"], data


async def test_malformed_json_is_422(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """Bytes that are not JSON are refused with a reason."""
    client, _ = api
    response = await client.post(
        "/v1/notifications", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "JSON" in response.json()["message"]


async def test_body_over_the_limit_is_413(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """A body larger than api.max_body_bytes is refused before it is read."""
    client, _ = api
    response = await client.post(
        "/v1/notifications", json={"severity": "info", "subject": "x", "body": "y" * 300_000}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert response.headers["connection"] == "close"  # the rest of the body is never read


async def test_chunked_body_over_the_limit_is_413_everywhere(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """Without a Content-Length the body is counted as it arrives: every route that reads one
    answers 413 too_large, not the 400 (FastAPI's "error parsing the body") or the 500 (a
    handler's own catch-all) the interrupted read used to become."""
    client, _ = api

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * 10_000

    nid = "01M8G18M2KBFTF8SKWTR2MPKZZ"
    for path in (
        "/v1/notifications",
        f"/v1/notifications/{nid}/ack",
        "/v1/callbacks/slack",
        "/v1/callbacks/twilio",
        "/v1/drills",
        "/v1/provider/override",
    ):
        response = await client.post(path, content=chunks(), headers={"Content-Type": "application/json"})
        assert (path, response.status_code, response.json()["error"]) == (path, 413, "too_large")
    for path in ("/v1/intake/alertmanager", "/v1/intake/grafana"):  # their own limit, once signed in
        signed_in = await client.post(path, content=chunks(), headers={"Content-Type": "application/json"})
        assert (path, signed_in.status_code, signed_in.json()["error"]) == (path, 422, "invalid_request")
        # without credentials: refused from the headers, before any of the body is counted or read
        anonymous = await client.post(path, content=chunks(), headers={"Authorization": "Bearer wrong"})
        assert (path, anonymous.status_code, anonymous.json()["error"]) == (path, 401, "unauthorized")


async def test_healthz_answers_head(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """HEAD /healthz: GET's status and headers without the body (some load balancers check with HEAD);
    the OpenAPI document describes the GET alone."""
    client, _ = api
    get, head = await client.get("/healthz"), await client.head("/healthz")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == get.headers["content-length"]
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert list(paths["/healthz"]) == ["get"]


async def test_batch_of_1000_in_one_commit(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """Up to 1,000 notifications are accepted in one request; 1,001 are refused."""
    client, _ = api
    batch = [{"severity": "info", "subject": f"n{i}"} for i in range(1000)]
    response = await client.post("/v1/notifications", json=batch)
    assert response.status_code == 202
    assert len(set(response.json()["ids"])) == 1000
    assert (await client.post("/v1/notifications", json=[*batch, batch[0]])).status_code == 422


async def test_idempotency_key_header_returns_the_first(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """Repeating an Idempotency-Key returns the original notification, marked as a replay."""
    client, _ = api
    first = await client.post("/v1/notifications", json=NOTE, headers={"Idempotency-Key": "deploy-1"})
    again = await client.post("/v1/notifications", json=NOTE, headers={"Idempotency-Key": "deploy-1"})
    assert again.status_code == 202
    assert again.json() == {"id": first.json()["id"], "duplicate": True}
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_an_idempotency_key_reused_for_another_notification_is_refused(
    api: tuple[httpx.AsyncClient, Daemon],
) -> None:
    """The same key with another request is a 422 naming where the key was (not the first
    notification: it may be another token's), and nothing is accepted (a duplicate would drop the
    new one unseen); the same request again, written differently (labels reordered, a default
    spelled out), is a replay."""
    client, _ = api
    labels = {"team": "payments", "env": "prod"}
    first = await client.post(
        "/v1/notifications", json={**NOTE, "labels": labels}, headers={"Idempotency-Key": "deploy-2"}
    )
    spelled_out = {**NOTE, "body": "", "source": "api", "labels": dict(reversed(labels.items()))}
    replay = await client.post("/v1/notifications", json=spelled_out, headers={"Idempotency-Key": "deploy-2"})
    assert replay.json() == {"id": first.json()["id"], "duplicate": True}
    other = await client.post(
        "/v1/notifications",
        json={**NOTE, "subject": "Payments API back"},
        headers={"Idempotency-Key": "deploy-2"},
    )
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"
    assert other.json()["details"] == [
        {"field": "header.Idempotency-Key", "reason": "first used for another notification"}
    ]
    assert first.json()["id"] not in other.text
    in_body = await client.post("/v1/notifications", json={**NOTE, "idempotency_key": "deploy-2"})
    assert in_body.json()["details"][0]["field"] == "body.idempotency_key"
    batch = [
        {**NOTE, "idempotency_key": "new-one"},
        {**NOTE, "subject": "other", "idempotency_key": "deploy-2"},
    ]
    refused = await client.post("/v1/notifications", json=batch)
    assert (refused.status_code, refused.json()["details"][0]["field"]) == (422, "body.1.idempotency_key")
    listed = (await client.get("/v1/notifications")).json()["items"]
    assert [n["id"] for n in listed] == [first.json()["id"]]


async def test_the_id_of_a_notification_sent_without_a_key_is_no_key_for_another(
    api: tuple[httpx.AsyncClient, Daemon],
) -> None:
    """A notification sent without a key has its id as key: another notification sent with that
    id as its Idempotency-Key (a script re-sending "notification X") is a 422, not a 202 duplicate
    that stores nothing."""
    client, _ = api
    nid = (await client.post("/v1/notifications", json=NOTE)).json()["id"]
    again = await client.post(
        "/v1/notifications", json={**NOTE, "subject": "a new one"}, headers={"Idempotency-Key": nid}
    )
    assert (again.status_code, again.json()["error"]) == (422, "idempotency_key_reused")
    assert len((await client.get("/v1/notifications")).json()["items"]) == 1


async def test_idempotency_key_field_in_a_batch(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """Keys given as fields deduplicate within and across batches."""
    client, _ = api
    batch = [
        dict(NOTE, idempotency_key="a"),
        dict(NOTE, idempotency_key="a"),
        dict(NOTE, idempotency_key="b"),
    ]
    data = (await client.post("/v1/notifications", json=batch)).json()
    assert data["ids"][0] == data["ids"][1] != data["ids"][2]
    assert data["duplicates"] == [data["ids"][1]]
    header_on_batch = await client.post("/v1/notifications", json=batch, headers={"Idempotency-Key": "x"})
    assert header_on_batch.status_code == 422


async def test_unknown_notification_is_404(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """Asking for an id that does not exist is a 404 with a JSON error."""
    client, _ = api
    response = await client.get("/v1/notifications/01NOPE")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_a_notification_this_release_cannot_read_is_a_500_that_says_why(
    api: tuple[httpx.AsyncClient, Daemon], tmp_path: Path
) -> None:
    """A row another release wrote (a severity this one does not know) answers a 500 naming the
    notification, the value and what to do, not an anonymous internal error."""
    client, _ = api
    nid = (await client.post("/v1/notifications", json=NOTE | {"severity": "info"})).json()["id"]
    with sqlite3.connect(tmp_path / "outbox.db") as conn:
        conn.execute("UPDATE notifications SET severity = 'page' WHERE id = ?", (nid,))
    response = await client.get(f"/v1/notifications/{nid}")
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "unreadable"
    assert nid in body["message"] and "'page'" in body["message"]
    assert f"POST /v1/notifications/{nid}/cancel" in body["message"]


async def test_list_filters_by_state_and_by_its_former_name(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """``state`` filters the list (``status``, its former name, too); disagreeing, they are a 422."""
    client, _ = api
    await client.post("/v1/provider/override", json={"state": "outage"})
    held = (await client.post("/v1/notifications", json={"severity": "info", "subject": "held"})).json()["id"]
    await client.post("/v1/notifications", json=NOTE)  # critical: to the webhook, not held
    by_state = (await client.get("/v1/notifications", params={"state": "held"})).json()
    by_status = (await client.get("/v1/notifications", params={"status": "held"})).json()
    both = await client.get("/v1/notifications", params={"state": "held", "status": "failed"})
    assert [n["id"] for n in by_state["items"]] == [held]
    assert by_status == by_state
    assert both.status_code == 422
    assert both.json()["error"] == "invalid_request"


async def test_list_refuses_an_unknown_query_parameter(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """A misspelt filter is a 422 naming it, not a list of everything."""
    client, _ = api
    await client.post("/v1/notifications", json=NOTE)
    response = await client.get("/v1/notifications", params={"severty": "critical", "limit": 5})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert [d["field"] for d in body["details"]] == ["query.severty"]


async def test_list_refuses_a_filter_given_twice(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """``state=held&state=pending`` is a 422 naming the parameter, not a list of the last one only."""
    client, _ = api
    response = await client.get("/v1/notifications?state=held&state=pending&limit=5&limit=5")
    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["details"]] == ["query.limit", "query.state"]


@pytest.mark.parametrize("since", ["1700000000", "99999999999", "1.7e9", " 17 "])
async def test_list_refuses_since_as_a_number(api: tuple[httpx.AsyncClient, Daemon], since: str) -> None:
    """``since`` is an RFC 3339 date-time: a number (Unix time, guessed as seconds or milliseconds
    by its size) is a 422, not a silently chosen moment."""
    client, _ = api
    response = await client.get("/v1/notifications", params={"since": since})
    assert response.status_code == 422, response.text
    assert "RFC 3339" in response.json()["details"][0]["reason"]


async def test_a_trailing_slash_is_a_404_not_a_redirect(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """``/v1/notifications/`` is a JSON 404 as on the workers' port, not a 307 to an http:// URL."""
    client, _ = api
    response = await client.post("/v1/notifications/", json=NOTE)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize("cursor", ["zzz", "", "01jd3y6t9v7e6k8m1w2q4r5s6t", "01JD3Y6T9V7E6K8M1W2Q4R5S6TX"])
async def test_list_refuses_a_malformed_cursor(api: tuple[httpx.AsyncClient, Daemon], cursor: str) -> None:
    """A cursor that is not a notification id is a 422, not the first page again."""
    client, _ = api
    await client.post("/v1/notifications", json=NOTE)
    response = await client.get("/v1/notifications", params={"cursor": cursor})
    assert response.status_code == 422, response.text
    assert response.json()["details"][0]["field"] == "query.cursor"


async def test_list_pages_with_next_cursor(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """``next_cursor`` fed back as ``cursor`` gives the next page, newest first, then null."""
    client, _ = api
    ids = (await client.post("/v1/notifications", json=[NOTE, NOTE, NOTE])).json()["ids"]
    first = (await client.get("/v1/notifications", params={"limit": 2})).json()
    second = (
        await client.get("/v1/notifications", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    assert [n["id"] for n in first["items"] + second["items"]] == ids[::-1]
    assert second["next_cursor"] is None


API_DOC = Path(__file__).parents[2] / "docs" / "api.md"
#: the ids the examples of docs/api.md show, in the order their notifications were submitted
DOC_IDS = ("01M8G18M2KBFTF8SKWTR2MPKZY", "01M8G18M2KBFTF8SKWTR2MPKZZ", "01M8G18M2KBFTF8SKWTR2MPM00")


@pytest.mark.parametrize(
    "section",
    ["## `GET /v1/notifications`\n", "## `POST /v1/notifications/{id}/cancel`"],
    ids=["list", "cancel"],
)
async def test_the_documented_curl_examples_answer_as_shown(
    api: tuple[httpx.AsyncClient, Daemon], section: str
) -> None:
    """docs/api.md's curl examples for listing and cancelling, run as written, answer the status shown."""
    if shutil.which("curl") is None:
        pytest.skip("no curl on this machine")
    client, _ = api
    await client.post("/v1/provider/override", json={"state": "outage"})
    disks = [{"severity": "warning", "subject": f"Disk {n}% on db-{n - 89}"} for n in (91, 92, 93)]
    ids = (await client.post("/v1/notifications", json=disks)).json()["ids"]
    examples = _doc_examples(section)
    assert examples, section
    for command, shown in examples:
        for doc_id, real_id in zip(DOC_IDS, ids, strict=True):
            command = command.replace(doc_id, real_id)
        command = command.replace("http://127.0.0.1:8025", str(client.base_url).rstrip("/"))
        curl = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            command + " -o /dev/null -w '%{http_code}'",
            env={**os.environ, "TOKEN": TOKEN},
            stdout=asyncio.subprocess.PIPE,
        )
        answered, _ = await curl.communicate()
        assert answered.decode() == shown, command


def _doc_examples(heading: str) -> list[tuple[str, str]]:
    """(command, status it shows) of each ``sh`` block in the section of docs/api.md under ``heading``."""
    text = API_DOC.read_text()
    section = text[text.index(heading) :].split("\n## ", 1)[0]
    examples = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        lines = block.splitlines()
        command = "\n".join(line for line in lines if not line.startswith("#"))
        status = next(line[2:5] for line in lines if line.startswith("# "))
        examples.append((command, status))
    return examples


async def test_override_forces_and_releases(api: tuple[httpx.AsyncClient, Daemon], servers: Any) -> None:
    """An operator override declares an outage at once (critical to the webhook), and is released."""
    client, _ = api
    forced = await client.post(
        "/v1/provider/override", json={"state": "outage", "reason": "MS incident EX123"}
    )
    assert forced.json() == {"state": "outage", "forced": "outage"}
    status = (await client.get("/v1/status")).json()["provider"]
    assert status["state"] == "outage"
    assert status["forced"] == {"state": "outage", "reason": "MS incident EX123"}
    assert "forced by operator" in status["events"][0]["cause"]
    nid = (await client.post("/v1/notifications", json=NOTE)).json()["id"]
    (request,) = await servers[1].wait_for_async(1)
    assert request.json()["id"] == nid
    released = await client.delete("/v1/provider/override")
    assert released.json()["state"] == "healthy"


async def test_an_alert_is_delivered_while_its_commit_syncs_and_answered_after(
    api: tuple[httpx.AsyncClient, Daemon], servers: Any
) -> None:
    """The webhook goes out once the notification is committed; the 202 waits for the disk."""
    client, daemon = api
    await client.post("/v1/provider/override", json={"state": "outage"})
    writer = daemon.store._writer  # type: ignore[attr-defined]
    real_sync, gate, holding = writer._sync, threading.Event(), threading.Event()

    def held_sync() -> None:
        holding.set()
        gate.wait(30)
        real_sync()

    writer._sync = held_sync
    try:
        post = asyncio.create_task(client.post("/v1/notifications", json=NOTE))
        (request,) = await servers[1].wait_for_async(1)  # delivered while the sync is held
        assert holding.is_set()
        assert not post.done()
        gate.set()
        response = await post
        assert response.status_code == 202
        assert response.json()["id"] == request.json()["id"]
    finally:
        gate.set()
        writer._sync = real_sync


async def test_status_shows_queue_and_provider(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """GET /v1/status reports the provider's state and the queue by state."""
    client, _ = api
    await client.post("/v1/provider/override", json={"state": "outage"})
    await client.post("/v1/notifications", json={"severity": "info", "subject": "held one"})
    data = (await client.get("/v1/status")).json()
    assert data["provider"]["name"] == "test-provider"
    assert data["queue"]["notifications"] == {"held": 1}


async def test_healthz_and_draining(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """healthz is public; while draining, intake answers 503 with Retry-After."""
    client, daemon = api
    async with httpx.AsyncClient(base_url=str(client.base_url)) as anonymous:
        assert (await anonymous.get("/healthz")).status_code == 200
    daemon.draining = True
    response = await client.post("/v1/notifications", json=NOTE)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    daemon.draining = False


async def test_healthz_answers_503_until_the_daemon_has_started_everything(
    tmp_path: Path, servers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API serves before the intake workers and the SMTP intake start: until they have, a load
    balancer reading /healthz must not send traffic, so it answers 503 "starting"."""
    smtp, hook = servers
    entered, release = asyncio.Event(), asyncio.Event()
    start_workers = Daemon._start_workers

    async def held(self: Daemon) -> None:  # the API is serving by now
        entered.set()
        await release.wait()
        await start_workers(self)

    monkeypatch.setattr(Daemon, "_start_workers", held)
    daemon = make_daemon(tmp_path / "outbox.db", smtp, hook, max_body=1024)
    starting = asyncio.create_task(daemon.start())
    try:
        await asyncio.wait_for(entered.wait(), 30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.api_port}") as client:
            early = await client.get("/healthz")
            assert early.status_code == 503, early.text
            assert early.json()["error"] == "starting"
            assert early.headers["Retry-After"] == "1"
            release.set()
            await starting
            assert (await client.get("/healthz")).json() == {"status": "ok", "provider": "healthy"}
    finally:
        release.set()
        await asyncio.gather(starting, return_exceptions=True)
        await daemon.stop()


async def test_openapi_describes_the_intake(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """/openapi.json documents POST /v1/notifications with its request body."""
    client, _ = api
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/notifications"]["post"]
    assert "requestBody" in operation
    assert set(operation["responses"]) >= {"202", "401", "413", "422", "503"}


async def test_failed_commit_is_503_and_accepts_nothing(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    """When SQLite reports the disk full, intake answers 503 and stores nothing of the request."""
    client, daemon = api
    await client.post("/v1/notifications", json=NOTE)
    pages = await daemon.store._writer.run(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
    await daemon.store._writer.run(lambda conn: conn.execute(f"PRAGMA max_page_count={pages + 1}"))
    batch = [{"severity": "info", "subject": f"n{i}", "body": "x" * 4000} for i in range(50)]
    response = await client.post("/v1/notifications", json=batch)
    assert response.status_code == 503
    assert response.json()["error"] == "store_unavailable"
    counts = (await client.get("/v1/status")).json()["queue"]["notifications"]
    assert sum(counts.values()) == 1, counts  # only the first one (pending or already delivered)


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Any:
    """A 1 MiB tmpfs: a real ENOSPC, as on a full disk."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], check=False)
    if done.returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


async def test_full_disk_is_503_then_recovers(tiny_filesystem: Path, servers: Any) -> None:
    """On a really full filesystem intake answers 503; once space is freed it accepts again."""
    async with _on_a_tiny_disk(tiny_filesystem, servers) as (client, filler):
        await client.post("/v1/provider/override", json={"state": "outage"})
        _fill(filler)
        batch = [{"severity": "info", "subject": f"n{i}", "body": "x" * 4000} for i in range(100)]
        response = await client.post("/v1/notifications", json=batch)
        assert response.status_code == 503
        filler.unlink()
        assert (await client.post("/v1/notifications", json=batch[:2])).status_code == 202
        assert (await client.get("/v1/status")).json()["queue"]["notifications"] == {"held": 2}


@asynccontextmanager
async def _on_a_tiny_disk(
    tiny_filesystem: Path, servers: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    """A daemon whose store is on ``tiny_filesystem``, a client of its API, and the path of a file
    to fill that filesystem with."""
    smtp, hook = servers
    daemon = await start_daemon(tiny_filesystem / "outbox.db", smtp, hook)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{daemon.api_port}", headers=headers
        ) as client:
            yield client, tiny_filesystem / "filler"
    finally:
        await daemon.stop()


def _fill(filler: Path) -> None:
    """Write ``filler`` until its filesystem is full. Unbuffered: a buffered file would try again
    to flush what did not fit when it closes."""
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass


async def test_healthz_is_503_while_the_disk_is_full_and_200_once_the_store_commits_again(
    tiny_filesystem: Path, servers: Any
) -> None:
    """A real ENOSPC: once an accept fails, /healthz answers what every intake does (503
    store_unavailable, Retry-After), as do /v1/status and /metrics; a re-sent notification answered
    as the duplicate it is proves nothing about committing. Space freed, it is ready again with no
    accept in between (a load balancer sends none to a node it took out): its probe commits."""
    async with _on_a_tiny_disk(tiny_filesystem, servers) as (client, filler):
        # held, not sent: no outcome to record shares a commit with the re-send below
        await client.post("/v1/provider/override", json={"state": "outage"})
        held = {"severity": "info", "subject": "kept for later"}
        keyed = {"Idempotency-Key": "before-the-disk-filled"}
        assert (await client.post("/v1/notifications", json=held, headers=keyed)).status_code == 202
        assert (await client.get("/healthz")).status_code == 200
        _fill(filler)
        batch = [{"severity": "info", "subject": f"n{i}", "body": "x" * 4000} for i in range(100)]
        assert (await client.post("/v1/notifications", json=batch)).status_code == 503
        health = await client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["error"] == "store_unavailable"
        assert "database or disk is full" in health.json()["message"]
        assert health.headers["Retry-After"] == "5"
        assert (await client.head("/healthz")).status_code == 503
        store = (await client.get("/v1/status")).json()["store"]
        assert (store["state"], store["reason"]) == (
            "unavailable",
            "the store could not commit: database or disk is full",
        )
        scrape = (await client.get("/metrics")).text  # read, though it cannot commit
        assert "backchannel_store_up 0.0" in scrape
        assert 'backchannel_queue_notifications{status="held"} 1.0' in scrape
        again = await client.post("/v1/notifications", json=held, headers=keyed)
        assert (again.status_code, again.json()["duplicate"]) == (202, True)
        assert (await client.get("/healthz")).status_code == 503
        filler.unlink()
        await until(lambda: _healthz_is(client, 200), deadline_s=10)
        assert (await client.get("/v1/status")).json()["store"] == {
            "state": "ok",
            "since": None,
            "reason": None,
        }
        assert "backchannel_store_up 1.0" in (await client.get("/metrics")).text
        assert (await client.post("/v1/notifications", json=batch[:2])).status_code == 202


async def test_healthz_is_503_while_the_store_is_read_only_and_200_once_it_is_writable(
    api: tuple[httpx.AsyncClient, Daemon],
) -> None:
    """The store read-only (SQLite's own refusal, as for a file or mount made read-only): 503 on
    /healthz as on intake, until the store takes writes again."""
    client, daemon = api
    connections = await _write_connections(daemon)
    _query_only(connections, True)
    refused = await client.post("/v1/notifications", json=NOTE)
    assert (refused.status_code, refused.json()["error"]) == (503, "store_unavailable")
    health = await client.get("/healthz")
    assert health.status_code == 503
    assert "readonly" in health.json()["message"], health.text
    _query_only(connections, False)
    await until(lambda: _healthz_is(client, 200), deadline_s=10)


async def _write_connections(daemon: Daemon) -> list[sqlite3.Connection]:
    """The store's connections that write: the writer thread's (taken by a job; set directly
    afterwards, since its jobs begin a write first) and the event loop's."""
    writer: sqlite3.Connection = await daemon.store._writer.run(lambda conn: conn, durable=False)
    inline = daemon.store._inline._conn
    assert inline is not None
    return [writer, inline]


def _query_only(connections: list[sqlite3.Connection], on: bool) -> None:
    """Every write is refused (SQLITE_READONLY, as on a read-only file), or taken again."""
    for conn in connections:
        conn.execute(f"PRAGMA query_only={int(on)}")


async def _healthz_is(client: httpx.AsyncClient, status: int) -> bool:
    return (await client.get("/healthz")).status_code == status


@pytest.mark.parametrize(
    "key", ["alertmanager:abc:2026-11-29T01:00:00.000000Z:firing", "grafana:x", "smtp:1"]
)
async def test_a_key_in_an_intakes_namespace_is_refused(
    api: tuple[httpx.AsyncClient, Daemon], key: str
) -> None:
    """An API client cannot choose an alert's key (its notification would answer the alert as a
    duplicate, silencing the page): 422, in the body or the header."""
    client, _ = api
    in_body = await client.post("/v1/notifications", json={**NOTE, "idempotency_key": key})
    in_header = await client.post("/v1/notifications", json=NOTE, headers={"Idempotency-Key": key})
    for response in (in_body, in_header):
        assert response.status_code == 422, response.text
        assert "backchannel's own" in response.json()["message"]


async def test_a_store_failure_on_a_read_is_a_json_503(
    api: tuple[httpx.AsyncClient, Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, daemon = api

    async def unavailable(*_: object) -> None:
        raise StoreUnavailable("database is locked")

    monkeypatch.setattr(daemon.store, "notification", unavailable)
    response = await client.get("/v1/notifications/01ABC")
    assert response.status_code == 503
    assert response.json() == {"error": "store_unavailable", "message": "database is locked"}
    assert response.headers["Retry-After"] == "5"


async def test_a_bug_on_a_read_is_a_json_500(
    api: tuple[httpx.AsyncClient, Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, daemon = api

    async def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(daemon.store, "notification", broken)
    response = await client.get("/v1/notifications/01ABC")
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert "a bug" not in response.text


async def test_acknowledging_checks_the_token_before_the_body(api: tuple[httpx.AsyncClient, Daemon]) -> None:
    client, _ = api
    response = await client.post(
        "/v1/notifications/01ABC/ack", json={"by": 5, "extra": True}, headers={"Authorization": ""}
    )
    assert response.status_code == 401


async def test_the_alert_intakes_document_403_and_their_rate_limit_as_503(
    api: tuple[httpx.AsyncClient, Daemon],
) -> None:
    """Their rate limit answers 503 (which Alertmanager retries), so no 429 is documented."""
    client, _ = api
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/v1/intake/alertmanager", "/v1/intake/grafana"):
        responses = paths[path]["post"]["responses"]
        assert {"401", "403", "503"} <= set(responses) and "429" not in responses
        assert "rate_limited" in responses["503"]["description"]


@pytest.mark.parametrize("path", ["/v1/notifications", "/v1/intake/alertmanager"])
async def test_a_bug_on_an_intake_is_a_json_500(
    api: tuple[httpx.AsyncClient, Daemon], monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The lean intake endpoints answer a bug as FastAPI's routes do, not with uvicorn's plain text."""
    client, daemon = api

    async def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(daemon.acceptor, "accept", broken)
    alert = {"labels": {"alertname": "a"}, "startsAt": "2026-11-29T01:00:00Z", "status": "firing"}
    body = (
        {"version": "4", "status": "firing", "receiver": "r", "groupKey": "g", "alerts": [alert]}
        if path.endswith("alertmanager")
        else {"severity": "critical", "subject": "s", "body": "b"}
    )
    response = await client.post(path, json=body)
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal_error",
        "message": "internal error; the daemon's log has the details",
    }


async def test_another_method_on_the_notifications_collection_allows_get_and_post(
    api: tuple[httpx.AsyncClient, Daemon],
) -> None:
    client, _ = api
    response = await client.put("/v1/notifications", json={})
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD, POST"
    assert response.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize("source", ["drill", "backchannel", "bounce"])
async def test_backchannels_own_sources_are_refused(
    api: tuple[httpx.AsyncClient, Daemon], source: str
) -> None:
    """A page from a system named "drill" would be shown as a test and left out of catch-ups."""
    client, _ = api
    body = {"severity": "critical", "subject": "s", "source": source}
    response = await client.post("/v1/notifications", json=body)
    assert response.status_code == 422
    assert f"'{source}' is reserved" in response.text


async def test_an_unauthorised_submission_is_refused_before_its_body_is_asked_for(
    api: tuple[httpx.AsyncClient, Daemon],
) -> None:
    """``Expect: 100-continue`` with a wrong token: the 401 comes first, no "100 Continue" that
    would have the client upload up to max_body_bytes for nothing."""
    _, daemon = api
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.api_port)
    writer.write(
        b"POST /v1/notifications HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
        b"Content-Type: application/json\r\nContent-Length: 200000\r\nExpect: 100-continue\r\n\r\n"
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status.startswith(b"HTTP/1.1 401"), status
