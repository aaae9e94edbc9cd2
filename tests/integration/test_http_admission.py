"""The HTTP listeners' limits (daemon/api/admission.py) over real sockets on 127.0.0.1: connections
past ``api.max_connections`` are answered 503 and closed at once while those admitted are served,
bodies past ``api.max_buffered_body_bytes`` are refused until bytes are given back, and the API
port (uvicorn) closes a connection that never sends a whole request. On the intake workers' server,
the API port's server, and both as the daemon runs them from its configuration."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from daemon.api.admission import Admission
from daemon.api.lean_http import LeanServer
from daemon.api.lean_messages import Reply
from daemon.api.limits import BodyLimit
from daemon.api.serving import ApiServer, server_config
from tests.servers import SmtpServer
from tests.support import PROVIDER_AND_EMAIL, listening_socket, running, until

LIMIT = 1000
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _accept(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
    return 202, {"size": len(body)}, {}


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app that reads the whole body and answers its size."""
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    payload = json.dumps({"size": size}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


@contextlib.asynccontextmanager
async def _lean(admission: Admission) -> AsyncIterator[tuple[LeanServer, int]]:
    """The intake workers' server with ``admission``, on an ephemeral port."""
    server = LeanServer(_accept, LIMIT, admission=admission)
    sock = listening_socket()
    await server.start(sock)
    try:
        yield server, sock.getsockname()[1]
    finally:
        await server.stop(grace_s=1)


def _unread(*headers: tuple[bytes, bytes]) -> ASGIApp:
    """An ASGI app that answers 401 with ``headers`` without reading the body."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        payload = b'{"error":"unauthorized"}'
        fixed = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 401, "headers": [*fixed, *headers]})
        await send({"type": "http.response.body", "body": payload})

    return app


@contextlib.asynccontextmanager
async def _uvicorn(admission: Admission, app: ASGIApp | None = None) -> AsyncIterator[tuple[ApiServer, int]]:
    """The API port's server with ``admission`` (short deadlines) serving ``app``, by default
    :func:`_echo` behind the body limit."""
    app = app or BodyLimit(_echo, LIMIT, admission=admission)
    server = ApiServer(server_config(app, admission, idle_timeout_s=0.3, request_timeout_s=0.5))
    sock = listening_socket()
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await until(lambda: server.started, 5)
    try:
        yield server, sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _connect(port: int, source: str | None = None) -> Stream:
    """A connection to 127.0.0.1:``port``, from ``source`` (another loopback address) if given."""
    return await asyncio.open_connection(
        "127.0.0.1", port, local_addr=None if source is None else (source, 0)
    )


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], Any]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return int(lines[0].split()[1]), headers, json.loads(body)


async def _closed_within(reader: asyncio.StreamReader, deadline_s: float) -> bool:
    """Whether the server closes the connection within ``deadline_s`` (what it sends is skipped)."""
    try:
        async with asyncio.timeout(deadline_s):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


async def _refused(port: int, source: str | None = None) -> tuple[int, dict[str, str], Any]:
    """A new connection's unasked answer; it must be closed after it."""
    reader, writer = await _connect(port, source)
    try:
        answer = await _answer(reader)
        assert await _closed_within(reader, 2)
    finally:
        writer.close()
    return answer


def _post(body: bytes, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    return f"POST /v1/notifications HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode() + body


def _assert_overloaded(answer: tuple[int, dict[str, str], Any], limit: str) -> None:
    status, headers, body = answer
    assert (status, body["error"], headers["retry-after"], headers["connection"]) == (
        503,
        "overloaded",
        "5",
        "close",
    ), answer
    assert limit in body["message"]


# -- the intake workers' server ---------------------------------------------------------------------


async def test_connections_past_the_cap_get_503_while_the_first_are_served() -> None:
    """Past two open connections new ones get 503 at once; the two are served; a closing one frees a place."""
    admission = Admission("intake", 2, 8 * LIMIT)
    async with _lean(admission) as (server, port):
        first, second = await _connect(port), await _connect(port)
        await until(lambda: len(server.connections) == 2, 5)
        for _ in range(2):
            _assert_overloaded(await _refused(port), "api.max_connections")
        for reader, writer in (first, second):
            writer.write(_post(b"hello"))
            assert (await _answer(reader))[0] == 202
        first[1].close()
        await until(lambda: len(server.connections) == 1, 5)
        reader, writer = await _connect(port)
        writer.write(_post(b"again"))
        assert (await _answer(reader))[:3:2] == (202, {"size": 5})
        writer.close()
        second[1].close()
        assert admission.turned_away == 2


async def test_body_bytes_past_the_budget_are_refused_until_given_back() -> None:
    """A body past the budget gets 503; bytes come back when a body completes or its connection goes."""
    admission = Admission("intake", 16, 1500)
    async with _lean(admission) as (_, port):
        holder, writer = await _a_second_body_refused(admission, port)
        assert admission.buffered == 800
        writer.write(b"a" * 200)
        assert (await _answer(holder))[:3:2] == (202, {"size": LIMIT})
        assert admission.buffered == 0
        _, gone_writer = await _connect(port)
        gone_writer.write(_post(b"c" * 900, declared=LIMIT))
        await until(lambda: admission.buffered == 900, 5)
        gone_writer.close()
        await until(lambda: admission.buffered == 0, 5)
        writer.write(_post(b"d" * 900))
        assert (await _answer(holder))[:3:2] == (202, {"size": 900})
        writer.close()


async def test_turned_away_clients_are_counted_each_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """Every refusal reaches the counter; the log has one warning for a burst of them."""
    counted: list[str] = []
    admission = Admission("intake", 1, 8 * LIMIT, counted.append)
    caplog.set_level(logging.WARNING, logger="daemon.api.admission")
    async with _lean(admission) as (server, port):
        _, writer = await _connect(port)
        await until(lambda: len(server.connections) == 1, 5)
        for _ in range(3):
            await _refused(port)
        writer.close()
    assert counted == ["max_connections"] * 3
    warnings = [r for r in caplog.records if getattr(r, "event", None) == "http.turned_away"]
    assert [(getattr(r, "listener", None), getattr(r, "count", None)) for r in warnings] == [("intake", 1)]


# -- the API port's server (uvicorn) ------------------------------------------------------------------


async def test_the_api_port_answers_connections_past_the_cap_503() -> None:
    """uvicorn capped: a third connection gets 503 at once, two are served, a closing one frees a place."""
    admission = Admission("api", 2, 8 * LIMIT)
    async with _uvicorn(admission) as (server, port):
        first, second = await _connect(port), await _connect(port)
        await until(lambda: len(server.server_state.connections) == 2, 5)
        _assert_overloaded(await _refused(port), "api.max_connections")
        for reader, writer in (first, second):
            writer.write(_post(b"hello"))
            assert (await _answer(reader))[:3:2] == (200, {"size": 5})
        first[1].close()
        await until(lambda: len(server.server_state.connections) == 1, 5)
        reader, writer = await _connect(port)
        writer.write(_post(b"again"))
        assert (await _answer(reader))[0] == 200
        writer.close()
        second[1].close()


async def test_the_api_port_closes_a_connection_that_sends_nothing() -> None:
    """No request, or a lone line break after an answer: closed at the idle timeout (uvicorn held both)."""
    async with _uvicorn(Admission("api", 8, 8 * LIMIT)) as (_, port):
        silent, silent_writer = await _connect(port)
        assert await _closed_within(silent, 3)
        reader, writer = await _connect(port)
        writer.write(_post(b"x"))
        assert (await _answer(reader))[0] == 200
        writer.write(b"\r\n")
        assert await _closed_within(reader, 3)
        silent_writer.close()
        writer.close()


async def test_the_api_port_closes_the_connection_after_an_early_413() -> None:
    """Answered before its body came (413 by Content-Length): ``Connection: close`` and closed,
    whatever the client sends next (before, uvicorn read the whole body to find the next request,
    and closed only at the idle timeout)."""
    async with _uvicorn(Admission("api", 8, 8 * LIMIT)) as (_, port):
        reader, writer = await _connect(port)
        writer.write(_post(b"", declared=LIMIT + 1))
        status, headers, _ = await _answer(reader)
        assert (status, headers["connection"]) == (413, "close")
        writer.write(b"x" * (LIMIT + 1))
        assert await _closed_within(reader, 3)
        writer.close()


async def test_the_api_port_drops_a_request_that_never_completes() -> None:
    """A body begun and never finished: closed at the request timeout, its bytes given back."""
    admission = Admission("api", 8, 8 * LIMIT)
    async with _uvicorn(admission) as (_, port):
        reader, writer = await _connect(port)
        writer.write(_post(b"x" * 100, declared=LIMIT))
        await until(lambda: admission.buffered == 100, 5)
        assert await _closed_within(reader, 3)
        await until(lambda: admission.buffered == 0, 5)
        writer.close()


async def test_the_api_port_refuses_body_bytes_past_the_budget() -> None:
    """A body past the budget gets 503 and a close; the first, completed, is answered and given back."""
    admission = Admission("api", 8, 1500)
    async with _uvicorn(admission) as (_, port):
        holder, writer = await _a_second_body_refused(admission, port)
        writer.write(b"a" * 200)
        assert (await _answer(holder))[:3:2] == (200, {"size": LIMIT})
        assert admission.buffered == 0
        writer.close()


async def test_the_api_port_idles_a_connection_answered_before_its_body() -> None:
    """A request answered before its body, kept alive: once the body is in, the idle timeout runs
    (uvicorn armed nothing then, and held the connection as long as the client liked)."""
    async with _uvicorn(Admission("api", 8, 8 * LIMIT), _unread()) as (_, port):
        reader, writer = await _connect(port)
        writer.write(_post(b"", declared=10))
        assert (await _answer(reader))[0] == 401
        writer.write(b"x" * 10)
        assert await _closed_within(reader, 3)
        writer.close()


async def test_the_api_port_lingers_after_closing_on_a_body_still_arriving() -> None:
    """Answered with ``Connection: close`` before its body: a client still sending 8 MiB reads the
    whole answer, not a reset (what it sends is discarded a moment), and is closed within seconds."""
    async with _uvicorn(Admission("api", 8, 8 * LIMIT), _unread((b"connection", b"close"))) as (_, port):
        reader, writer = await _connect(port)
        writer.write(_post(b"x" * (8 << 20), declared=64 << 20))
        status, headers, body = await _answer(reader)
        assert (status, headers["connection"], body) == (401, "close", {"error": "unauthorized"})
        assert await _closed_within(reader, 3)
        writer.close()


# -- the daemon, from its configuration ---------------------------------------------------------------

TOKEN = "admission-test-token-0123456789"
CONFIG = (
    """\
store: {{path: "{store}"}}
api: {{listen: "127.0.0.1:0", tokens: [{{name: t, token: "${{TOKEN}}"}}], {limits}}}
"""
    + PROVIDER_AND_EMAIL
    + """\
routes: [{{match: {{}}, healthy: [email], outage: defer}}]
"""
)
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
CAP_OF_TWO = "max_connections: 2, max_connections_per_client: 2"


def _config(tmp_path: Any, smtp: SmtpServer, limits: str) -> str:
    return CONFIG.format(store=tmp_path / "o.db", smtp_port=smtp.port, limits=limits)


async def _turned_away(api_port: int, listener: str) -> float:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        text = (await client.get(f"http://127.0.0.1:{api_port}/metrics")).text
    prefix = f'backchannel_http_turned_away_total{{limit="max_connections",listener="{listener}"}} '
    return next(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))


async def _cap_of_two(port: int) -> None:
    """Two connections open: a third is refused; the first is still answered (and closed)."""
    first, second = await _connect(port), await _connect(port)
    _assert_overloaded(await _refused(port), "2 connections already open")
    first[1].write(HEALTH)
    assert (await _answer(first[0]))[0] == 200
    assert await _closed_within(first[0], 3)
    first[1].close()
    second[1].close()


async def test_the_daemon_caps_its_api_port_from_the_configuration(tmp_path: Any) -> None:
    """api.max_connections: 2 on the API port; the refusal is counted in /metrics."""
    with SmtpServer() as smtp:
        async with running(_config(tmp_path, smtp, CAP_OF_TWO), {"TOKEN": TOKEN}) as daemon:
            assert daemon.api_port is not None
            await _cap_of_two(daemon.api_port)
            assert await _turned_away(daemon.api_port, "api") == 1


async def test_the_daemon_refuses_bodies_past_its_budget_without_logging_a_bug(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An alert call past api.max_buffered_body_bytes gets 503, not a logged failure; the first is served."""
    limits = "max_body_bytes: 1000, max_alert_body_bytes: 1000, max_buffered_body_bytes: 1500"
    with SmtpServer() as smtp:
        async with running(_config(tmp_path, smtp, limits), {"TOKEN": TOKEN}) as daemon:
            admission, port = daemon.api_admission, daemon.api_port
            assert admission is not None and port is not None
            holder, writer = await _connect(port)
            writer.write(_webhook(b" " * 800))
            await until(lambda: admission.buffered == 800, 5)
            second, second_writer = await _connect(port)
            second_writer.write(_webhook(b" " * 800))
            _assert_overloaded(await _answer(second), "api.max_buffered_body_bytes")
            second_writer.close()
            writer.write(b" " * 200)
            assert (await _answer(holder))[2]["error"] == "invalid_request"  # blanks: no payload
            writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records


def _webhook(part: bytes) -> bytes:
    """The start of an Alertmanager call whose body will be 1000 bytes."""
    return (
        "POST /v1/intake/alertmanager HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: {LIMIT}\r\n\r\n"
    ).encode() + part


async def test_intake_workers_cap_their_connections_and_report_the_refusals(tmp_path: Any) -> None:
    """api.max_connections: 2 in an intake worker; the daemon counts its refusal in /metrics."""
    with SmtpServer() as smtp:
        text = _config(tmp_path, smtp, CAP_OF_TWO)
        text += 'intake: {workers: {listen: "127.0.0.1:0", count: 1}}\n'
        async with running(text, {"TOKEN": TOKEN}) as daemon:
            assert daemon.workers is not None and daemon.api_port is not None
            await _cap_of_two(daemon.workers.port)
            api_port = daemon.api_port
            assert await until(lambda: _counted(api_port), 10)


async def _counted(api_port: int) -> bool:
    return await _turned_away(api_port, "intake") == 1


async def _a_second_body_refused(
    admission: Admission, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """One body holds 800 of a 1,500-byte budget; a second one's 800 get 503 and a close. Returns
    the first connection, its body not yet complete."""
    holder, writer = await _connect(port)
    writer.write(_post(b"a" * 800, declared=LIMIT))
    await until(lambda: admission.buffered == 800, 5)
    second, second_writer = await _connect(port)
    second_writer.write(_post(b"b" * 800, declared=LIMIT))
    _assert_overloaded(await _answer(second), "api.max_buffered_body_bytes")
    assert await _closed_within(second, 3)
    second_writer.close()
    return holder, writer
