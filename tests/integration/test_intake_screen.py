"""The intake workers' endpoints on their server (``IntakeApp`` on ``LeanServer``), in-process over a
real socket: the credentials the server's screen checked from the headers are not checked again
when the request's body is in (docs/intake.md, "Intake workers")."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

from daemon.api.admission import Admission
from daemon.api.auth import BearerAuth
from daemon.api.intake_app import IntakeApp
from daemon.api.lean_http import LeanServer
from daemon.api.ratelimit import LocalBuckets
from daemon.api.webhooks import WebhookIntake
from daemon.clock import SystemClock
from daemon.core.routing import Matcher, Route
from daemon.intake.accept import Acceptor
from daemon.intake.webhook_config import WebhookIntakesConfig
from daemon.store.sqlite import SqliteStore
from daemon.store_health import StoreHealth
from tests.support import listening_socket

TOKEN = "intake-screen-token-0123456789"
MIB = 1 << 20
ALERT = {"status": "firing", "labels": {"alertname": "A"}, "startsAt": "2026-11-27T08:00:00Z"}
AM_BODY = {"version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "bc", "alerts": [ALERT]}
BODIES = {
    "/v1/notifications": json.dumps({"severity": "info", "subject": "screened"}).encode(),
    "/v1/intake/alertmanager": json.dumps(AM_BODY).encode(),
    "/v1/intake/grafana": json.dumps({**AM_BODY, "version": "1", "orgId": 1}).encode(),
}


def _post(path: str, authorization: str) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {authorization}\r\n"
    return f"{head}Content-Length: {len(BODIES[path])}\r\n\r\n".encode() + BODIES[path]


async def _status(reader: asyncio.StreamReader) -> int:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        int(line[15:]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    await asyncio.wait_for(reader.readexactly(length), 5)
    return int(head.split()[1])


async def test_an_admitted_requests_token_is_checked_once(tmp_path: Path) -> None:
    """On the workers' server, the screen's verdict is what answers the request once its body is
    in: the tokens are looked through once per request, not again by the handler."""
    looked = 0

    def tokens() -> dict[str, str]:
        nonlocal looked
        looked += 1
        return {"alertmanager": TOKEN}

    store, clock = SqliteStore(tmp_path / "outbox.db"), SystemClock()
    await store.open()
    health = StoreHealth(store, clock)
    routes = (Route("all", Matcher(), ("email",), ("email",)),)
    acceptor = Acceptor(store, lambda: routes, clock, lambda: None, store_health=health)
    gate = BearerAuth(tokens, buckets=LocalBuckets())
    hooks = WebhookIntake(acceptor, gate, lambda: False, WebhookIntakesConfig)
    app = IntakeApp(acceptor, gate=gate, hooks=hooks, draining=lambda: False, store=health)
    server = LeanServer(app, MIB, admission=Admission("intake", 8, 8 * MIB), screen=app.screen)
    sock = listening_socket(8)
    await server.start(sock)
    try:
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        basic = "Basic " + base64.b64encode(f"alertmanager:{TOKEN}".encode()).decode()
        bearer = f"Bearer {TOKEN}"
        for path, authorization in zip(BODIES, (bearer, basic, bearer), strict=True):
            looked = 0
            writer.write(_post(path, authorization))
            assert await _status(reader) == 202
            assert looked == 1, path
        writer.close()
    finally:
        await server.stop(grace_s=1)
        await health.close()
        await store.close()
