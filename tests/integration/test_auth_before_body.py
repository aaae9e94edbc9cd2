"""Intake credentials are checked from the headers, before any of the body is read: on the intake
workers' port and on the API port, over real sockets on 127.0.0.1, the daemon in-process and its
worker a real process. A request refused is answered its usual JSON error and challenge at once
(no ``100 Continue``) and the connection is closed; an admitted one is answered as before (its
token checked once: ``test_intake_screen.py``).

Each refused request below declares a 1 MiB body and never sends it: answered only after its body,
it would get nothing before the request timeout (30 s), so each answer is awaited ``ANSWER_S``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from daemon.app import Daemon
from tests.servers import SmtpServer
from tests.support import FIRING_ALERT, PROVIDER_AND_EMAIL, running

TOKEN = "auth-before-body-token-0123456789"
READER = "auth-before-body-reader-0123456789"
SLOW = "auth-before-body-slow-0123456789"
ENV = {"TOKEN": TOKEN, "READER": READER, "SLOW": SLOW}
CONFIG = (
    """\
store: {{path: "{store}"}}
api:
  listen: "127.0.0.1:0"
  tokens:
    - {{name: alertmanager, token: "${{TOKEN}}"}}
    - {{name: reader, token: "${{READER}}", scopes: [read]}}
    - {{name: slow, token: "${{SLOW}}", scopes: [send], rate_limit: {{per_second: 0.01, burst: 1}}}}
"""
    + PROVIDER_AND_EMAIL
    + """\
routes: [{{match: {{}}, healthy: [email], outage: defer}}]
intake: {{workers: {{listen: "127.0.0.1:0", count: 1}}}}
"""
)
MIB = 1 << 20
#: an answer given from the headers comes at once; one that waits for the body never comes
ANSWER_S = 3.0
SUBMIT, ALERTMANAGER, GRAFANA = "/v1/notifications", "/v1/intake/alertmanager", "/v1/intake/grafana"
WEBHOOK_CHALLENGE = 'Bearer realm="backchannel", Basic realm="backchannel"'
#: each intake endpoint, and the challenge its 401 carries
ENDPOINTS = ((SUBMIT, "Bearer"), (ALERTMANAGER, WEBHOOK_CHALLENGE), (GRAFANA, WEBHOOK_CHALLENGE))
AM_BODY = {
    "version": "4",
    "groupKey": "{}:{}",
    "status": "firing",
    "receiver": "bc",
    "alerts": [FIRING_ALERT],
}
#: a valid body for each endpoint
BODIES = {
    SUBMIT: json.dumps({"severity": "info", "subject": "before the body"}).encode(),
    ALERTMANAGER: json.dumps(AM_BODY).encode(),
    GRAFANA: json.dumps({**AM_BODY, "version": "1", "orgId": 1}).encode(),
}
PORTS = ("intake", "api")
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Answer = tuple[int, dict[str, str], Any]


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    """The daemon with one intake worker; tokens that send, only read, and send once (burst 1)."""
    with SmtpServer() as smtp:
        text = CONFIG.format(store=tmp_path / "outbox.db", smtp_port=smtp.port)
        async with running(text, ENV) as started:
            yield started


@contextlib.asynccontextmanager
async def _connected(daemon: Daemon, port: str) -> AsyncIterator[Stream]:
    assert daemon.workers is not None and daemon.api_port is not None
    number = daemon.workers.port if port == "intake" else daemon.api_port
    reader, writer = await asyncio.open_connection("127.0.0.1", number)
    try:
        yield reader, writer
    finally:
        writer.close()


def _head(path: str, authorization: str | None, length: int, extra: str = "") -> bytes:
    credentials = "" if authorization is None else f"Authorization: {authorization}\r\n"
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{credentials}"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def _post(path: str, authorization: str | None = f"Bearer {TOKEN}") -> bytes:
    return _head(path, authorization, len(BODIES[path])) + BODIES[path]


async def _answer(reader: asyncio.StreamReader) -> Answer:
    """The next answer (a ``100 Continue`` too), within ``ANSWER_S``."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_S)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    status = int(lines[0].split()[1])
    if status == 100:
        return status, headers, None
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), ANSWER_S)
    return status, headers, json.loads(body)


async def _closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closes the connection within ``ANSWER_S`` (nothing more is sent)."""
    try:
        return await asyncio.wait_for(reader.read(1), ANSWER_S) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


async def _refused_unread(daemon: Daemon, port: str, head: bytes) -> Answer:
    """The answer to ``head`` (its body never sent), which must be the connection's last."""
    async with _connected(daemon, port) as (reader, writer):
        writer.write(head)
        answer = await _answer(reader)
        assert answer[1].get("connection") == "close", answer
        assert await _closed(reader), answer
    return answer


@pytest.mark.parametrize("port", PORTS)
async def test_a_wrong_or_missing_token_is_refused_before_the_body(daemon: Daemon, port: str) -> None:
    """Headers with a wrong token, or none, and a 1 MiB Content-Length, no body: each intake
    endpoint answers its usual 401 and challenge at once, then closes the connection."""
    for path, challenge in ENDPOINTS:
        wrong = await _refused_unread(daemon, port, _head(path, "Bearer wrong", MIB))
        assert (wrong[0], wrong[1]["www-authenticate"]) == (401, challenge)
        assert wrong[2] == {"error": "unauthorized", "message": "invalid bearer token"}
        missing = await _refused_unread(daemon, port, _head(path, None, MIB))
        either = "" if path == SUBMIT else " or basic credentials"
        assert missing[2] == {"error": "unauthorized", "message": f"missing bearer token{either}"}
        assert (missing[0], missing[1]["www-authenticate"]) == (401, challenge)


@pytest.mark.parametrize("port", PORTS)
async def test_a_refused_request_expecting_100_continue_is_not_told_to_continue(
    daemon: Daemon, port: str
) -> None:
    """``Expect: 100-continue`` without valid credentials: the first answer is the 401, never a
    100 Continue; with them, the 100 comes, then the body, then the 202."""
    expect = "Expect: 100-continue\r\n"
    for path, _ in ENDPOINTS:
        answer = await _refused_unread(daemon, port, _head(path, "Bearer wrong", MIB, expect))
        assert (answer[0], answer[2]["error"]) == (401, "unauthorized")
    async with _connected(daemon, port) as (reader, writer):
        for path, _ in ENDPOINTS:
            writer.write(_head(path, f"Bearer {TOKEN}", len(BODIES[path]), expect))
            assert (await _answer(reader))[0] == 100
            writer.write(BODIES[path])
            status, headers, body = await _answer(reader)
            assert (status, "connection" in headers) == (202, False), body


@pytest.mark.parametrize("port", PORTS)
async def test_alertmanagers_basic_auth_is_decided_from_the_headers(daemon: Daemon, port: str) -> None:
    """HTTP Basic as Alertmanager's ``basic_auth`` sends it: another username, a wrong password or
    a malformed value get the webhooks' 401 at once; the token's name and the token are admitted."""
    message = (
        "invalid basic credentials: the username is the token's name in api.tokens, the password the token"
    )
    for path in (ALERTMANAGER, GRAFANA):
        for pair in (f"someone:{TOKEN}", "alertmanager:wrong"):
            basic = "Basic " + base64.b64encode(pair.encode()).decode()
            answer = await _refused_unread(daemon, port, _head(path, basic, MIB))
            assert answer[:3:2] == (401, {"error": "unauthorized", "message": message})
            assert answer[1]["www-authenticate"] == WEBHOOK_CHALLENGE
        malformed = await _refused_unread(daemon, port, _head(path, "Basic not-base64!", MIB))
        assert malformed[2] == {"error": "unauthorized", "message": "malformed basic credentials"}
        async with _connected(daemon, port) as (reader, writer):
            writer.write(_post(path, "Basic " + base64.b64encode(f"alertmanager:{TOKEN}".encode()).decode()))
            assert (await _answer(reader))[0] == 202


@pytest.mark.parametrize("port", PORTS)
async def test_scope_and_rate_limit_refusals_come_from_the_headers(daemon: Daemon, port: str) -> None:
    """A token without ``send`` gets its 403 at once; a token past its rate limit its 429 (the
    alert webhooks: 503 ``rate_limited``) with Retry-After at once; each then closed."""
    for path, _ in ENDPOINTS:
        answer = await _refused_unread(daemon, port, _head(path, f"Bearer {READER}", MIB))
        message = "token 'reader' lacks the 'send' scope"
        assert answer[:3:2] == (403, {"error": "forbidden", "message": message})
    async with _connected(daemon, port) as (reader, writer):  # the burst of one, spent
        writer.write(_post(SUBMIT, f"Bearer {SLOW}"))
        assert (await _answer(reader))[0] == 202
    for path, status in ((SUBMIT, 429), (ALERTMANAGER, 503), (GRAFANA, 503)):
        answer = await _refused_unread(daemon, port, _head(path, f"Bearer {SLOW}", MIB))
        assert (answer[0], answer[2]["error"]) == (status, "rate_limited")
        assert int(answer[1]["retry-after"]) >= 90


@pytest.mark.parametrize("port", PORTS)
async def test_pipelined_requests_are_answered_in_order_around_refusals(daemon: Daemon, port: str) -> None:
    """Pipelined in one write: the three endpoints signed in and a refusal without a body are
    answered in order on a kept connection (the refusal as before, kept alive too); then two signed
    in and a refusal with a body to come: the two answered, then the 401, then the close."""
    async with _connected(daemon, port) as (reader, writer):
        writer.write(_post(SUBMIT) + _post(ALERTMANAGER) + _head(GRAFANA, "Bearer wrong", 0) + _post(GRAFANA))
        answers = [await _answer(reader) for _ in range(4)]
        assert [status for status, _, _ in answers] == [202, 202, 401, 202], answers
        assert not [headers for _, headers, _ in answers if "connection" in headers]
        assert answers[2][1]["www-authenticate"] == WEBHOOK_CHALLENGE
        writer.write(_post(ALERTMANAGER) + _post(SUBMIT) + _head(SUBMIT, "Bearer wrong", MIB))
        answers = [await _answer(reader) for _ in range(3)]
        assert [(status, headers.get("connection")) for status, headers, _ in answers] == [
            (202, None),
            (202, None),
            (401, "close"),
        ]
        assert await _closed(reader)


@pytest.mark.parametrize("port", PORTS)
async def test_a_client_still_sending_a_refused_body_reads_the_401(daemon: Daemon, port: str) -> None:
    """A wrong token with the whole 1 MiB body sent at once: the 401 is read, not a reset (the
    server discards what still comes for a moment before it closes)."""
    for path, _ in ENDPOINTS:
        async with _connected(daemon, port) as (reader, writer):
            writer.write(_head(path, "Bearer wrong", MIB) + b" " * MIB)
            status, headers, _ = await _answer(reader)
            assert (status, headers["connection"]) == (401, "close")
            assert await _closed(reader)
