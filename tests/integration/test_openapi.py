"""/openapi.json says what the running daemon answers: statuses, bodies, headers, security."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest

from daemon.app import Daemon
from tests.servers import SmtpServer, WebhookReceiver
from tests.support import api_client, running, until

ADMIN, SENDER, READER, LIMITED = (
    "openapi-admin-token-1234",
    "openapi-sender-token-1234",
    "openapi-reader-token-1234",
    "openapi-limited-token-1234",
)
SECRET = "whsec_" + base64.b64encode(b"openapi-test-webhook-secret").decode()
#: a well-formed id that names no notification
UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
CONFIG = """\
store: {{path: {store}}}
api:
  listen: 127.0.0.1:0
  tokens:
    - {{name: admin, token: "{admin}"}}
    - {{name: ci, token: "{sender}", scopes: [send]}}
    - {{name: board, token: "{reader}", scopes: [read]}}
    - {{name: limited, token: "{limited}", scopes: [read], rate_limit: {{per_second: 0.01, burst: 1}}}}
provider:
  name: p
  smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false}}
  mail_from: bc@test.example
  checks: [{{type: smtp, every: 1h, timeout: 2s}}]
channels:
  email: {{type: email, to: [ops@test.example]}}
  hook: {{type: webhook, url: "{hook_url}", secret: "{secret}", allow_private: true}}
routes:
  - {{match: {{}}, healthy: [email], outage: [hook]}}
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
        )
        async with running(text) as started:
            yield started


async def test_every_answer_is_documented_for_its_operation(daemon: Daemon) -> None:
    """Refusals, misses, conflicts and bad queries answer a status, body and headers the document names."""
    async with api_client(daemon, ADMIN) as admin:
        spec = (await admin.get("/openapi.json")).json()
        delivered = await _delivered_notification(admin)
        answers = await _representative_answers(daemon, delivered)
    statuses = {(r.request.method, r.request.url.path, r.status_code) for r, _ in answers}
    assert {status for *_, status in statuses} >= {200, 401, 403, 404, 409, 422, 429}, statuses
    for response, operation in answers:
        _assert_documented(spec, operation, response)


async def test_authenticated_operations_declare_their_security(daemon: Daemon) -> None:
    """Every operation needing a token names the bearer scheme; the status page also HTTP Basic."""
    async with api_client(daemon, ADMIN) as admin:
        spec = (await admin.get("/openapi.json")).json()
    public = {("/healthz", "get"), ("/openapi.json", "get")}
    for path, method, operation in _operations(spec):
        if (path, method) in public or path.startswith("/v1/callbacks/"):
            assert "security" not in operation, (method, path)
        else:
            assert {"bearer": []} in operation.get("security", []), (method, path)
    assert {"basic": []} in spec["paths"]["/"]["get"]["security"]
    assert set(spec["components"]["securitySchemes"]) >= {"bearer", "basic"}


async def test_metrics_documents_no_store_unavailable_answer(daemon: Daemon) -> None:
    """/metrics answers 200 with the store down (backchannel_store_up 0), never 503: the document
    says so; so do the status document and page, which show the provider from memory then."""
    async with api_client(daemon, ADMIN) as admin:
        spec = (await admin.get("/openapi.json")).json()
    responses = spec["paths"]["/metrics"]["get"]["responses"]
    assert set(responses) == {"200", "401", "403", "429"}
    assert "backchannel_store_up 0" in responses["200"]["description"]
    assert set(spec["paths"]["/v1/status"]["get"]["responses"]) == {"200", "401", "403", "429"}
    assert set(spec["paths"]["/"]["get"]["responses"]) == {"200", "401", "429"}


async def test_every_error_response_is_the_project_error_body(daemon: Daemon) -> None:
    """No operation documents FastAPI's own validation body: every 4xx and 5xx is the Error schema."""
    async with api_client(daemon, ADMIN) as admin:
        spec = (await admin.get("/openapi.json")).json()
    for path, method, operation in _operations(spec):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
    assert "HTTPValidationError" not in spec["components"]["schemas"]


async def test_the_list_and_a_notification_have_typed_schemas(daemon: Daemon) -> None:
    """The list's 200 names items and next_cursor; a notification names its fields and trail."""
    async with api_client(daemon, ADMIN) as admin:
        spec = (await admin.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    page = _resolve(spec, _json_schema(spec["paths"]["/v1/notifications"]["get"], "200"))
    assert set(page["required"]) == {"items", "next_cursor"}
    one = _resolve(spec, _json_schema(spec["paths"]["/v1/notifications/{notification_id}"]["get"], "200"))
    assert one == _resolve(spec, page["properties"]["items"]["items"])
    assert {"id", "status", "severity", "subject", "plan", "deliveries", "attempts"} <= set(one["required"])
    assert schemas["NotificationStatus"]["enum"] == [
        "pending",
        "held",
        "delivered",
        "failed",
        "cancelled",
        "acknowledged",
    ]


async def test_every_success_of_backchannels_own_operations_has_a_typed_schema(daemon: Daemon) -> None:
    """Each 2xx JSON body of an operation for backchannel's clients (not a vendor's callback, which
    only needs a 200) is described field by field: an object naming its required properties and
    allowing no others, so a client can rely on it and the answers above are checked against it."""
    async with api_client(daemon, ADMIN) as admin:
        spec = (await admin.get("/openapi.json")).json()
    for path, method, operation in _operations(spec):
        if path.startswith("/v1/callbacks/"):
            continue
        for status, response in operation["responses"].items():
            body = response.get("content", {}).get("application/json")
            if not status.startswith("2") or body is None:
                continue
            schema = body["schema"]
            for one in schema.get("oneOf", [schema]):
                resolved = _resolve(spec, one)
                assert resolved.get("type") == "object" and resolved.get("required"), (method, path, status)
                assert resolved.get("additionalProperties") is False, (method, path, status)


async def test_twilio_inbound_is_documented_as_twiml(daemon: Daemon) -> None:
    """The SMS reply webhook answers XML (TwiML), and the document says so."""
    async with api_client(daemon, ADMIN) as admin:
        spec = (await admin.get("/openapi.json")).json()
    ok = spec["paths"]["/v1/callbacks/twilio/inbound"]["post"]["responses"]["200"]
    assert set(ok["content"]) == {"application/xml"}


async def test_the_rate_limit_documents_retry_after(daemon: Daemon) -> None:
    """Each documented 429 names the Retry-After header the refusal carries."""
    async with api_client(daemon, ADMIN) as admin:
        spec = (await admin.get("/openapi.json")).json()
    limited = [(p, m, o["responses"]["429"]) for p, m, o in _operations(spec) if "429" in o["responses"]]
    assert len(limited) >= 10
    for path, method, response in limited:
        assert "Retry-After" in response.get("headers", {}), (method, path)


async def test_every_operation_on_the_store_documents_its_503(daemon: Daemon) -> None:
    """Every operation but the readiness check, the metrics and the status document and page
    (which answer the store's state themselves) reads or writes the store, so each documents the
    503 (with Retry-After) that the store being unavailable answers."""
    async with api_client(daemon, ADMIN) as admin:
        spec = (await admin.get("/openapi.json")).json()
    answering = ("/healthz", "/metrics", "/v1/status", "/")
    operations = [(p, m, o) for p, m, o in _operations(spec) if p not in answering]
    assert len(operations) >= 14
    for path, method, operation in operations:
        unavailable = operation["responses"].get("503", {})
        assert "Retry-After" in unavailable.get("headers", {}), (method, path)


async def _delivered_notification(admin: httpx.AsyncClient) -> str:
    nid: str = (await admin.post("/v1/notifications", json={"severity": "info", "subject": "x"})).json()["id"]

    async def delivered() -> bool:
        return bool((await admin.get(f"/v1/notifications/{nid}")).json()["status"] == "delivered")

    await until(delivered)
    return nid


Answer = tuple[httpx.Response, tuple[str, str]]


async def _representative_answers(daemon: Daemon, delivered: str) -> list[Answer]:
    """(response, (path template, method)) for the requests an API client meets most."""
    answers: list[Answer] = []
    one, cancel, ack = (
        "/v1/notifications/{notification_id}",
        "/v1/notifications/{notification_id}/cancel",
        "/v1/notifications/{notification_id}/ack",
    )
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.api_port}") as anonymous,
        api_client(daemon, ADMIN) as admin,
        api_client(daemon, SENDER) as sender,
        api_client(daemon, READER) as reader,
        api_client(daemon, LIMITED) as limited,
    ):
        answers += [
            (await anonymous.get("/v1/notifications"), ("/v1/notifications", "get")),
            (await sender.get("/v1/notifications"), ("/v1/notifications", "get")),
            (await reader.get("/v1/notifications", params={"limit": 1}), ("/v1/notifications", "get")),
            (await admin.get("/v1/notifications", params={"state": "lost"}), ("/v1/notifications", "get")),
            (await admin.get("/v1/notifications", params={"colour": "red"}), ("/v1/notifications", "get")),
            (await admin.get("/v1/notifications", params={"cursor": "zzz"}), ("/v1/notifications", "get")),
            (await admin.get("/v1/notifications", params={"limit": 0}), ("/v1/notifications", "get")),
            (await reader.get(f"/v1/notifications/{delivered}"), (one, "get")),
            (await reader.get(f"/v1/notifications/{UNKNOWN_ID}"), (one, "get")),
            (await anonymous.get(f"/v1/notifications/{delivered}"), (one, "get")),
            (await admin.post(f"/v1/notifications/{delivered}/cancel"), (cancel, "post")),
            (await admin.post(f"/v1/notifications/{UNKNOWN_ID}/cancel"), (cancel, "post")),
            (await reader.post(f"/v1/notifications/{delivered}/cancel"), (cancel, "post")),
            (await admin.post(f"/v1/notifications/{delivered}/ack"), (ack, "post")),
            (await admin.post(f"/v1/notifications/{UNKNOWN_ID}/ack"), (ack, "post")),
            (await admin.post(f"/v1/notifications/{delivered}/ack", json={"by": ""}), (ack, "post")),
            (await anonymous.get("/v1/status"), ("/v1/status", "get")),
            (await sender.get("/v1/status"), ("/v1/status", "get")),
            (await sender.get("/metrics"), ("/metrics", "get")),
            (await reader.get("/metrics"), ("/metrics", "get")),
            (await reader.get("/v1/drills/drill-nope"), ("/v1/drills/{drill_id}", "get")),
            (await reader.post("/v1/drills"), ("/v1/drills", "post")),
            (await sender.delete("/v1/provider/override"), ("/v1/provider/override", "delete")),
            (
                await admin.post("/v1/provider/override", json={"state": "x"}),
                ("/v1/provider/override", "post"),
            ),
            (await anonymous.get("/"), ("/", "get")),
            (await anonymous.post("/v1/callbacks/twilio/inbound"), ("/v1/callbacks/twilio/inbound", "post")),
            (await limited.get("/v1/status"), ("/v1/status", "get")),
            (await limited.get("/v1/notifications"), ("/v1/notifications", "get")),
            (await anonymous.get("/healthz"), ("/healthz", "get")),
            (await reader.get("/v1/status"), ("/v1/status", "get")),
        ]
        forced = await admin.post("/v1/provider/override", json={"state": "outage", "reason": "drill"})
        answers.append((forced, ("/v1/provider/override", "post")))
        answers.append((await reader.get("/v1/status"), ("/v1/status", "get")))  # forced, with events
        drill = await admin.post("/v1/drills")
        answers.append((drill, ("/v1/drills", "post")))
        drill_id = drill.json()["drill"]
        answers.append((await reader.get(f"/v1/drills/{drill_id}"), ("/v1/drills/{drill_id}", "get")))
        answers.append((await admin.delete("/v1/provider/override"), ("/v1/provider/override", "delete")))
    return answers


def _assert_documented(spec: dict[str, Any], where: tuple[str, str], response: httpx.Response) -> None:
    path, method = where
    label = f"{method.upper()} {path} -> {response.status_code}: {response.text[:200]}"
    documented = spec["paths"][path][method]["responses"].get(str(response.status_code))
    assert documented is not None, label
    media_type = response.headers["content-type"].partition(";")[0].strip()
    declared = {name.partition(";")[0].strip(): body for name, body in documented.get("content", {}).items()}
    assert media_type in declared, label
    if media_type == "application/json":
        schema = {**declared[media_type]["schema"], "components": spec["components"]}
        errors = [e.message for e in jsonschema_rs.validator_for(schema).iter_errors(response.json())]
        assert not errors, (label, errors)
    for header in documented.get("headers", {}):
        assert header in response.headers, (label, header)


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def _json_schema(operation: dict[str, Any], status: str) -> dict[str, Any]:
    schema: dict[str, Any] = operation["responses"][status]["content"]["application/json"]["schema"]
    return schema


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if not ref:
        return schema
    resolved: dict[str, Any] = spec["components"]["schemas"][ref.removeprefix("#/components/schemas/")]
    return resolved
