"""``api.max_connections_per_client`` over real sockets: one address cannot take every connection.

Clients on 127.0.0.1 and 127.0.0.2 (both loopback on Linux) connect to both HTTP servers (the
intake workers' and the API port's) and to the daemon as its configuration sets them up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from daemon.api.admission import Admission
from daemon.config_api import ApiConfig
from tests.integration.test_http_admission import (
    CONFIG,
    HEALTH,
    LIMIT,
    TOKEN,
    _answer,
    _assert_overloaded,
    _connect,
    _lean,
    _post,
    _refused,
    _uvicorn,
)
from tests.servers import SmtpServer
from tests.support import running, until

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
PER_CLIENT = "api.max_connections_per_client"


async def _from(address: str, port: int) -> Stream:
    return await _connect(port, address)


async def _refused_from(address: str, port: int) -> tuple[int, dict[str, str], Any]:
    return await _refused(port, address)


async def _two_from_one_address_then_another(
    admission: Admission, port: int, served: int, open_now: Callable[[], int]
) -> None:
    """Two connections from 127.0.0.1 hold its share: a third from it is refused, one from
    127.0.0.2 is served; a closing one gives its address a place back."""
    first, second = await _from("127.0.0.1", port), await _from("127.0.0.1", port)
    await until(lambda: open_now() == 2, 5)
    _assert_overloaded(await _refused_from("127.0.0.1", port), PER_CLIENT)
    other = await _from("127.0.0.2", port)
    other[1].write(_post(b"other"))
    assert (await _answer(other[0]))[0] == served
    first[1].close()
    await until(lambda: admission.by_client.get("127.0.0.1") == 1, 5)
    again = await _from("127.0.0.1", port)
    again[1].write(_post(b"again"))
    assert (await _answer(again[0]))[0] == served
    for _, writer in (second, other, again):
        writer.close()
    await until(lambda: not admission.by_client, 5)
    assert admission.turned_away == 1


async def test_the_intake_workers_server_caps_each_address() -> None:
    admission = Admission("intake", 8, 8 * LIMIT, max_per_client=2)
    async with _lean(admission) as (server, port):
        await _two_from_one_address_then_another(admission, port, 202, lambda: len(server.connections))


async def test_the_api_port_caps_each_address() -> None:
    admission = Admission("api", 8, 8 * LIMIT, max_per_client=2)
    async with _uvicorn(admission) as (server, port):
        connections = server.server_state.connections
        await _two_from_one_address_then_another(admission, port, 200, lambda: len(connections))


async def test_the_whole_cap_is_named_when_both_are_reached() -> None:
    """Every connection open (from several addresses): the answer names max_connections."""
    admission = Admission("intake", 2, 8 * LIMIT, max_per_client=1)
    async with _lean(admission) as (server, port):
        held = [await _from("127.0.0.1", port), await _from("127.0.0.2", port)]
        await until(lambda: len(server.connections) == 2, 5)
        _assert_overloaded(await _refused_from("127.0.0.3", port), "api.max_connections)")
        for _, writer in held:
            writer.close()


def test_the_default_share_is_half_the_connections() -> None:
    token = [{"name": "t", "token": "x" * 24}]
    assert ApiConfig(tokens=token).per_client_limit == 256
    assert ApiConfig(tokens=token, max_connections=1).per_client_limit == 1
    assert ApiConfig(tokens=token, max_connections_per_client=500).per_client_limit == 500


@contextlib.asynccontextmanager
async def _daemon(tmp_path: Any, limits: str, extra: str = "") -> AsyncIterator[tuple[int, int]]:
    """The daemon with ``limits`` in ``api``: its API port, and its workers' port (or 0)."""
    with SmtpServer() as smtp:
        text = CONFIG.format(store=tmp_path / "o.db", smtp_port=smtp.port, limits=limits) + extra
        async with running(text, {"TOKEN": TOKEN}) as daemon:
            assert daemon.api_port is not None
            yield daemon.api_port, daemon.workers.port if daemon.workers is not None else 0


async def _turned_away_per_client(api_port: int, listener: str) -> float:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        text = (await client.get(f"http://127.0.0.1:{api_port}/metrics")).text
    prefix = (
        f'backchannel_http_turned_away_total{{limit="max_connections_per_client",listener="{listener}"}} '
    )
    return next(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))


async def _one_each(port: int) -> None:
    """One connection from 127.0.0.1 held: a second from it is refused; 127.0.0.2 is answered."""
    held = await _from("127.0.0.1", port)
    _assert_overloaded(await _refused_from("127.0.0.1", port), "1 connections already open from this address")
    reader, writer = await _from("127.0.0.2", port)
    writer.write(HEALTH)
    assert (await _answer(reader))[0] == 200
    writer.close()
    held[1].close()


async def test_the_daemon_caps_each_address_on_both_ports_from_the_configuration(tmp_path: Any) -> None:
    """api.max_connections_per_client: 1 on the API port and in an intake worker; counted in /metrics."""
    workers = 'intake: {workers: {listen: "127.0.0.1:0", count: 1}}\n'
    async with _daemon(tmp_path, "max_connections_per_client: 1", workers) as (api_port, workers_port):
        await _one_each(api_port)
        assert await _turned_away_per_client(api_port, "api") == 1
        await _one_each(workers_port)
        assert await until(lambda: _counted(api_port), 10)


async def _counted(api_port: int) -> bool:
    return await _turned_away_per_client(api_port, "intake") == 1
