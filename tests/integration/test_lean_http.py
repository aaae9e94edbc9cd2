"""The intake workers' HTTP/1.1 server (daemon/api/lean_http.py) over real sockets, byte by byte."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from daemon.api.admission import Admission
from daemon.api.lean_http import LeanServer
from daemon.api.lean_messages import Reply, Respond
from tests.support import listening_socket, read_until_closed, stop_as_connections_arrive, until

LIMIT = 1000


class Echo:
    """Answers 202 with what it got; ``/slow`` waits for ``release``; ``/boom`` raises."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, str], bytes]] = []
        self.finished = 0
        self.release = asyncio.Event()

    async def __call__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        self.calls.append((method, path, headers, body))
        if path == "/slow":
            await self.release.wait()
        if path == "/boom":
            raise RuntimeError("handler failed")
        self.finished += 1
        return (
            202,
            {"method": method, "path": path, "body": body.decode(), "n": len(self.calls)},
            {"x-seen": "1"},
        )


@contextlib.asynccontextmanager
async def _serving(
    idle_timeout_s: float, request_timeout_s: float
) -> AsyncIterator[tuple[LeanServer, Echo, int]]:
    """A server with an :class:`Echo` handler on an ephemeral loopback port, stopped after."""
    echo = Echo()
    server = LeanServer(
        echo,
        LIMIT,
        admission=Admission("intake", 512, 8 * LIMIT),
        idle_timeout_s=idle_timeout_s,
        request_timeout_s=request_timeout_s,
    )
    sock = listening_socket(16)
    await server.start(sock)
    try:
        yield server, echo, sock.getsockname()[1]
    finally:
        echo.release.set()
        await server.stop(grace_s=1)


@pytest.fixture
async def served() -> AsyncIterator[tuple[LeanServer, Echo, int]]:
    async with _serving(idle_timeout_s=0.3, request_timeout_s=0.5) as running:
        yield running


async def _let_pass(seconds: float) -> None:
    """Until the loop's clock has moved ``seconds`` on (to show a timeout did not fire)."""
    loop = asyncio.get_running_loop()
    past = loop.time() + seconds
    await until(lambda: loop.time() > past)


async def _exchange(
    port: int, data: bytes, responses: int = 1
) -> tuple[list[tuple[int, dict[str, str], Any]], bool]:
    """Send ``data``, read ``responses`` answers; also whether the server closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    answers = []
    for _ in range(responses):
        answers.append(await _read_response(reader))
    closed = await _closed(reader)
    writer.close()
    return answers, closed


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], Any]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if status == 100:
        return status, headers, None
    body = await reader.readexactly(int(headers["content-length"]))
    return status, headers, json.loads(body)


async def _closed(reader: asyncio.StreamReader, wait_s: float = 0.2) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), wait_s) == b""
    except TimeoutError:
        return False


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(
    served: tuple[LeanServer, Echo, int],
) -> None:
    _, echo, port = served
    answers, closed = await _exchange(
        port, _post("/a?x=1", b"one") + _post("/b", b"two") + _post("/c", b""), 3
    )
    assert [a[2]["path"] for a in answers] == ["/a", "/b", "/c"]
    assert [a[2]["body"] for a in answers] == ["one", "two", ""]
    assert all(a[0] == 202 and a[1]["x-seen"] == "1" for a in answers)
    assert not closed
    assert echo.calls[0][2]["host"] == "x"


async def test_a_head_request_is_answered_with_headers_alone(served: tuple[LeanServer, Echo, int]) -> None:
    """HEAD (as some load balancers check /healthz): the GET's status and headers, the body's length,
    no body; the connection stays usable, so the next answer starts right after the headers."""
    _, _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + _post("/after", b"next"))
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode("latin-1")
    assert head.startswith("HTTP/1.1 202 ") and "x-seen: 1" in head
    assert int(head.lower().split("content-length:")[1].split()[0]) > 0
    after = await _read_response(reader)  # would fail to parse if a body had followed the HEAD's headers
    assert (after[0], after[2]["path"], after[2]["body"]) == (202, "/after", "next")
    writer.close()


async def test_a_chunked_body_arrives_whole(served: tuple[LeanServer, Echo, int]) -> None:
    _, _, port = served
    data = (
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
    )
    (answer,), _ = await _exchange(port, data)
    assert answer[2]["body"] == "abcdefg"


async def test_expect_100_continue_is_honoured(served: tuple[LeanServer, Echo, int]) -> None:
    _, _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    interim = await _read_response(reader)
    assert interim[0] == 100
    writer.write(b"hello")
    final = await _read_response(reader)
    assert final[0] == 202 and final[2]["body"] == "hello"
    writer.close()


async def test_a_declared_body_over_the_limit_is_refused_unread(served: tuple[LeanServer, Echo, int]) -> None:
    _, echo, port = served
    (answer,), closed = await _exchange(port, _post("/big", b"x" * (LIMIT + 1)))
    assert answer[0] == 413 and answer[2]["error"] == "too_large" and answer[1]["connection"] == "close"
    assert closed and echo.calls == []


async def test_a_chunked_body_over_the_limit_is_cut_off(served: tuple[LeanServer, Echo, int]) -> None:
    _, echo, port = served
    chunk = b"%x\r\n" % 600 + b"y" * 600 + b"\r\n"
    data = (
        b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk + chunk + b"0\r\n\r\n"
    )
    (answer,), closed = await _exchange(port, data)
    assert answer[0] == 413 and closed and echo.calls == []


async def test_malformed_requests_get_400_and_a_closed_connection(
    served: tuple[LeanServer, Echo, int],
) -> None:
    _, echo, port = served
    (answer,), closed = await _exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
    assert answer[0] == 400 and answer[2]["error"] == "bad_request" and closed
    upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    (answer,), closed = await _exchange(port, upgrade)
    assert answer[0] == 400 and closed and echo.calls == []


async def test_connection_close_and_http_10_close_after_the_answer(
    served: tuple[LeanServer, Echo, int],
) -> None:
    _, _, port = served
    (answer,), closed = await _exchange(port, _post("/c", b"", "Connection: close\r\n"))
    assert answer[0] == 202 and answer[1]["connection"] == "close" and closed
    (answer,), closed = await _exchange(port, b"POST /old HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
    assert answer[0] == 202 and closed


async def test_an_idle_kept_alive_connection_is_closed(served: tuple[LeanServer, Echo, int]) -> None:
    server, _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post("/a", b""))
    assert (await _read_response(reader))[0] == 202
    assert await asyncio.wait_for(reader.read(1), 5) == b""  # the 0.3 s idle timeout
    await until(lambda: not server.connections)
    writer.close()


async def test_a_failing_handler_is_a_500_and_the_server_goes_on(
    served: tuple[LeanServer, Echo, int],
) -> None:
    _, _, port = served
    (answer,), closed = await _exchange(port, _post("/boom", b""))
    assert answer[0] == 500 and closed
    (answer,), _ = await _exchange(port, _post("/fine", b""))
    assert answer[0] == 202


async def test_stop_answers_what_was_received_then_refuses(served: tuple[LeanServer, Echo, int]) -> None:
    server, echo, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post("/slow", b"wait"))
    await until(lambda: len(echo.calls) == 1)
    stopping = asyncio.create_task(server.stop(grace_s=5))
    await asyncio.sleep(0)
    echo.release.set()
    answer = await _read_response(reader)
    assert answer[0] == 202 and answer[2]["body"] == "wait"
    assert await asyncio.wait_for(reader.read(1), 5) == b""
    await stopping
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    writer.close()


async def test_a_client_connecting_as_the_server_stops_is_answered_or_closed(
    served: tuple[LeanServer, Echo, int],
) -> None:
    """Connections the kernel accepted as the stop began are not left open and unanswered."""
    server, _, port = served
    # sent while this coroutine holds the loop: they wait in the listener's backlog, and the
    # loop's next turn accepts them and begins the stop together
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
    for client in clients:
        client.sendall(_post("/fine", b"late"))
    await stop_as_connections_arrive(lambda: server.stop(grace_s=5))
    for client in clients:
        with client:
            received = await asyncio.to_thread(read_until_closed, client)
        assert received == b"" or received.startswith(b"HTTP/1.1 202 "), received


async def test_huge_headers_get_431_and_a_closed_connection(served: tuple[LeanServer, Echo, int]) -> None:
    _, echo, port = served
    huge = "".join(f"X-Filler-{i}: {'v' * 1000}\r\n" for i in range(70))
    (answer,), closed = await _exchange(port, _post("/h", b"", huge))
    assert answer[0] == 431 and answer[2]["error"] == "headers_too_large" and closed
    assert echo.calls == []


async def test_a_bad_request_after_a_good_one_is_answered_after_it(
    served: tuple[LeanServer, Echo, int],
) -> None:
    _, echo, port = served
    answers, closed = await _exchange(
        port, _post("/first", b"ok") + b"GARBAGE\r\n\r\n" + _post("/never", b""), 2
    )
    assert [a[0] for a in answers] == [202, 400]
    assert answers[0][2]["path"] == "/first" and closed
    assert [c[1] for c in echo.calls] == ["/first"]


async def test_a_client_still_sending_a_refused_body_reads_the_answer(
    served: tuple[LeanServer, Echo, int],
) -> None:
    _, echo, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(50):  # keeps sending after the limit is passed: no reset, the 413 arrives
        writer.write(b"%x\r\n" % 4000 + b"z" * 4000 + b"\r\n")
        await writer.drain()
    answer = await _read_response(reader)
    assert answer[0] == 413 and echo.calls == []
    writer.close()


async def test_stop_waits_for_answers_after_earlier_connections_came_and_went(
    served: tuple[LeanServer, Echo, int],
) -> None:
    server, echo, port = served
    (answer,), _ = await _exchange(port, _post("/before", b"", "Connection: close\r\n"))
    await until(lambda: not server.connections)  # a moment without connections, then a slow request
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post("/slow", b"late"))
    await until(lambda: len(echo.calls) == 2)
    stopping = asyncio.create_task(server.stop(grace_s=5))
    await asyncio.sleep(0)
    echo.release.set()
    answer = await _read_response(reader)
    assert answer[0] == 202 and answer[2]["body"] == "late" and answer[1]["connection"] == "close"
    await stopping
    writer.close()


async def test_trailers_do_not_replace_headers(served: tuple[LeanServer, Echo, int]) -> None:
    _, echo, port = served
    data = (
        b"POST /t HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer real\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\nAuthorization: Bearer forged\r\n\r\n"
    )
    (answer,), _ = await _exchange(port, data)
    assert answer[0] == 202 and answer[2]["body"] == "hi"
    assert echo.calls[0][2]["authorization"] == "Bearer real"


async def test_a_request_that_never_completes_is_dropped(served: tuple[LeanServer, Echo, int]) -> None:
    server, echo, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /slowloris HTTP/1.1\r\nHost: x\r\n")  # and nothing more
    assert await asyncio.wait_for(reader.read(1), 5) == b""  # the 0.5 s request timeout
    await until(lambda: not server.connections)
    assert echo.calls == []
    writer.close()


async def test_a_client_that_hangs_up_does_not_cancel_its_request(
    served: tuple[LeanServer, Echo, int],
) -> None:
    _, echo, port = served
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post("/slow", b"gone"))
    await until(lambda: len(echo.calls) == 1)
    writer.close()
    await asyncio.sleep(0.1)  # the server sees the hang-up while the handler still waits
    echo.release.set()
    await until(lambda: echo.finished == 1)  # the commit it stands for is not cut short


async def test_a_handler_slower_than_the_timeouts_is_answered(served: tuple[LeanServer, Echo, int]) -> None:
    """Neither timeout runs while the handler works: the answer comes, then the idle close."""
    server, echo, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_post("/slow", b""))
    await until(lambda: echo.calls)
    await _let_pass(1.0)  # past the 0.5 s request and 0.3 s idle timeouts
    assert server.connections, "closed while its handler was working"
    echo.release.set()
    assert (await _read_response(reader))[0] == 202
    assert await asyncio.wait_for(reader.read(1), 5) == b""
    writer.close()


async def test_a_request_arriving_behind_an_answered_one_keeps_its_request_timeout() -> None:
    """Answering the first of two pipelined requests does not put the idle timeout on the second."""
    async with _serving(idle_timeout_s=0.2, request_timeout_s=5.0) as (server, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            second = _post("/b", b"later")
            writer.write(_post("/a", b"") + second[:-3])  # the second's body is not all there yet
            assert (await _read_response(reader))[0] == 202
            await _let_pass(0.8)  # four idle timeouts
            assert server.connections, "closed by the idle timeout while a request was arriving"
            writer.write(second[-3:])
            status, _, body = await _read_response(reader)
            assert (status, body["body"]) == (202, "later")
        finally:
            writer.close()


class Screen:
    """Refuses ``/refused`` (401), fails on ``/broken``, admits ``/admitted`` to its own answer."""

    def __init__(self) -> None:
        self.admitted: list[bytes] = []

    def __call__(self, method: str, path: str, headers: dict[str, str]) -> Reply | Respond | None:
        if path == "/refused":
            return 401, {"error": "unauthorized", "message": "no"}, {"WWW-Authenticate": "Bearer"}
        if path == "/broken":
            raise RuntimeError("screen failed")
        return self.respond if path == "/admitted" else None

    async def respond(self, headers: dict[str, str], body: bytes) -> Reply:
        self.admitted.append(body)
        return 202, {"admitted": body.decode()}, {}


@contextlib.asynccontextmanager
async def _screened() -> AsyncIterator[tuple[Screen, Echo, int]]:
    """A server with an :class:`Echo` handler and a :class:`Screen`, stopped after."""
    echo, screen = Echo(), Screen()
    server = LeanServer(echo, LIMIT, admission=Admission("intake", 8, 8 * LIMIT), screen=screen)
    sock = listening_socket(8)
    await server.start(sock)
    try:
        yield screen, echo, sock.getsockname()[1]
    finally:
        await server.stop(grace_s=1)


async def test_a_screened_refusal_is_answered_before_its_body_then_closed() -> None:
    """Refused from its headers with a body to come: answered at once (no 100 Continue), after the
    request before it, then closed; the body is never read and the handler never called."""
    async with _screened() as (_, echo, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = b"POST /refused HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\nExpect: 100-continue\r\n\r\n"
        writer.write(_post("/first", b"ok") + head)
        first, refused = await _read_response(reader), await _read_response(reader)
        assert (first[0], refused[0], refused[1]["connection"]) == (202, 401, "close")
        assert (refused[1]["www-authenticate"], refused[2]["error"]) == ("Bearer", "unauthorized")
        assert await _closed(reader, 2)
        assert [call[1] for call in echo.calls] == ["/first"]
        writer.close()


async def test_a_screened_refusal_without_a_body_is_answered_in_turn_and_kept_alive() -> None:
    """Nothing to read: the refusal is answered in order and the connection serves the next request."""
    async with _screened() as (_, echo, port):
        answers, closed = await _exchange(port, _post("/refused", b"") + _post("/next", b"n"), 2)
        assert [a[0] for a in answers] == [401, 202] and "connection" not in answers[0][1]
        assert not closed and [call[1] for call in echo.calls] == ["/next"]


async def test_what_the_screen_admits_is_answered_by_it_with_the_body() -> None:
    """An admitted request, 100 Continue and all, is answered by what the screen gave once its
    body is in, and the handler is not asked; a screen that fails is a 500 and a close."""
    async with _screened() as (screen, echo, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /admitted HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert (await _read_response(reader))[0] == 100
        writer.write(b"hello")
        assert (await _read_response(reader))[::2] == (202, {"admitted": "hello"})
        assert screen.admitted == [b"hello"] and echo.calls == []
        writer.close()
        (broken,), closed = await _exchange(port, _post("/broken", b"x"))
        assert (broken[0], broken[2]["error"], closed) == (500, "internal_error", True)
