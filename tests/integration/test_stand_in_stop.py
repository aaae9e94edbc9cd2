"""The stand-in servers stopped at the moment connections arrive leave no socket to the garbage collector.

asyncio (3.11) builds an accepted connection's transport in a task of its own, one loop turn after
the accept. A server closed in between makes that task's ``Server._attach()`` fail an assertion,
which asyncio swallows unless in debug mode: the half-built transport, its socket open, is
collected later as an "unclosed transport" ResourceWarning in whichever test is then running (an
error under the suite's warning filter: the rare failures of the acceptance tests that stop a
stand-in while a daemon checks it). ``stop()`` stops accepting, lets those tasks finish, then closes.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.servers import SmtpServer, WebhookReceiver, _ThreadedServer

CONNECTIONS = 8


@pytest.fixture
def unraisable() -> Iterator[list[str]]:
    """The unclosed-resource warnings the garbage collector could not raise while a test ran (as
    text); anything else goes on to the usual hook."""
    caught: list[str] = []
    hook = sys.unraisablehook

    def keep(unraisable: sys.UnraisableHookArgs) -> None:
        text = f"{unraisable.exc_type.__name__}: {unraisable.exc_value}"
        if "unclosed" in text:
            caught.append(text)
        else:
            hook(unraisable)

    sys.unraisablehook = keep
    try:
        yield caught
    finally:
        sys.unraisablehook = hook


@pytest.mark.filterwarnings("error::ResourceWarning")  # so an unclosed socket reaches the hook
@pytest.mark.parametrize("kind", [SmtpServer, WebhookReceiver])
def test_a_stop_racing_accepted_connections_closes_every_socket(
    kind: type[_ThreadedServer], unraisable: list[str]
) -> None:
    """Connections wait in the backlog while the loop is held and the stop is queued meanwhile, so
    on the loop's next turn the accept and the stop run together: the old order (close, then let
    the connections' tasks run) left every one of them unclosed."""
    holding, held = threading.Event(), threading.Event()

    def hold() -> None:  # the loop turns no more until held is set
        holding.set()
        held.wait(10)

    with kind() as server:
        loop = server._thread.loop
        loop.call_soon_threadsafe(hold)
        assert holding.wait(10)
        clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(CONNECTIONS)]
        stopping = asyncio.run_coroutine_threadsafe(server._shutdown(), loop)  # what stop() does
        held.set()
        stopping.result(10)
        server._server = None
        for client in clients:
            client.close()
    gc.collect()
    assert unraisable == []
