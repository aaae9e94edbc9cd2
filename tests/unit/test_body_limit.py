"""The body limit (daemon/api/limits.py) around apps that read before or after they answer."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from daemon.api.limits import BodyLimit

LIMIT = 10


def _run(app: Any, chunks: list[bytes]) -> list[tuple[str, int | None, bytes]]:
    """What the server is sent for a chunked body (no Content-Length) of ``chunks``."""
    sent: list[tuple[str, int | None, bytes]] = []
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append((message["type"], message.get("status"), message.get("body", b"")))

    scope = {"type": "http", "headers": [], "method": "POST", "path": "/x"}
    asyncio.run(BodyLimit(app, LIMIT)(scope, receive, send))
    return sent


async def _reads_then_answers_500(scope: Scope, receive: Receive, send: Send) -> None:
    """A route that catches the failed read as an error of its own (a handler's catch-all)."""
    try:
        while (await receive()).get("more_body"):
            pass
    except Exception:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"internal error"})


async def _answers_then_reads(scope: Scope, receive: Receive, send: Send) -> None:
    """A streaming route: its answer has begun before the body outgrows the limit."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    with contextlib.suppress(Exception):  # the failed read ends the stream
        while (await receive()).get("more_body"):
            await send({"type": "http.response.body", "body": b".", "more_body": True})
    await send({"type": "http.response.body", "body": b"end", "more_body": False})


def test_a_route_that_catches_the_failed_read_is_answered_413() -> None:
    sent = _run(_reads_then_answers_500, [b"12345", b"678901234"])
    assert [(kind, status) for kind, status, _ in sent] == [
        ("http.response.start", 413),
        ("http.response.body", None),
    ]
    assert b"too_large" in sent[1][2]


def test_an_answer_begun_before_the_limit_was_passed_is_left_whole() -> None:
    sent = _run(_answers_then_reads, [b"12345", b"678901234"])
    assert sent[0] == ("http.response.start", 200, b"")
    assert sent[-1] == ("http.response.body", None, b"end")


def test_a_body_within_the_limit_passes() -> None:
    sent = _run(_reads_then_answers_500, [b"12345", b"6789"])
    assert sent == []  # read whole, no failure: this app answers only on one


def test_a_larger_limit_is_asked_for_once_and_only_past_the_default() -> None:
    """``widen`` is consulted with the request's path and credentials the first time its body
    passes the default, never for a body within it, and its answer then holds."""
    asked: list[tuple[str, str]] = []

    def widen(path: str, authorization: str) -> int:
        asked.append((path, authorization))
        return 20

    async def reads(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def run(chunks: list[bytes]) -> int | None:
        messages = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]
        statuses: list[int | None] = []

        async def receive() -> Message:
            return messages.pop(0)

        async def send(message: Message) -> None:
            statuses.append(message.get("status"))

        scope = {"type": "http", "headers": [(b"authorization", b"Bearer t")], "method": "POST", "path": "/a"}
        asyncio.run(BodyLimit(reads, LIMIT, widen)(scope, receive, send))
        return statuses[0]

    assert run([b"12345", b"67890"]) == 202 and asked == []
    assert run([b"12345", b"67890", b"12345"]) == 202 and asked == [("/a", "Bearer t")]
    assert run([b"1234567890", b"1234567890", b"1"]) == 413 and len(asked) == 2
