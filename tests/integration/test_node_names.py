"""One process per node name on the real PostgreSQL: a second one under the same name is refused.

Two stores opened with one ``node`` name stand for two daemons given the same ``store.node``
(a configuration copied between hosts); each drives a :class:`~daemon.leadership.Leadership`,
which takes the name at start and keeps it every round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from daemon.clock import SystemClock
from daemon.core.health import Thresholds
from daemon.leadership import Leadership
from daemon.monitor import ProviderMonitor
from daemon.node_name import NodeNameInUse, dead_here, new_instance
from daemon.store.postgres import PostgresStore
from tests.integration.conftest import PgFactory
from tests.support import until

pytestmark = pytest.mark.usefixtures("postgres_server")


def node_of(store: PostgresStore, lease_s: float) -> Leadership:
    monitor = ProviderMonitor(store, Thresholds(failure=1, success=1), SystemClock())
    return Leadership(store, monitor, SystemClock(), lease_s=lease_s)


@contextlib.asynccontextmanager
async def started(leadership: Leadership) -> AsyncIterator[Leadership]:
    await leadership.start()
    try:
        yield leadership
    finally:
        await leadership.stop()


async def test_a_second_process_under_a_running_nodes_name_is_refused(pg_nodes: PgFactory) -> None:
    """The running node keeps its name fresh; the second start sees it and fails, naming the node."""
    first, second = await pg_nodes("a"), await pg_nodes("a")
    # a lease of 3 s: a round of the running node delayed on a loaded machine is not a stale name
    async with started(node_of(first, lease_s=3)) as running:
        with pytest.raises(
            NodeNameInUse, match=r"another process is running as node 'a-\w+'.*own store\.node"
        ):
            await node_of(second, lease_s=3).start()
        assert running.is_leader and running.task is not None and not running.task.done()


async def test_a_name_given_back_at_a_clean_stop_is_taken_at_once(pg_nodes: PgFactory) -> None:
    first, second = await pg_nodes("a"), await pg_nodes("a")
    async with started(node_of(first, lease_s=30)):
        pass
    began = time.monotonic()
    async with started(node_of(second, lease_s=30)) as again:
        assert again.is_leader
    assert time.monotonic() - began < 15, "it waited for the name as if its holder were alive"


async def test_a_name_its_holder_stopped_keeping_is_taken_after_a_lease(pg_nodes: PgFactory) -> None:
    """A holder on another host that vanished (power cut, network gone): taken once it is stale."""
    first, second = await pg_nodes("a"), await pg_nodes("a")
    assert await first.take_name("other-host:4242:cafe0001", stale_s=1.0) is None
    async with started(node_of(second, lease_s=1.0)) as node:
        assert node.is_leader


async def test_a_name_held_by_a_dead_process_of_this_host_is_taken_at_once(pg_nodes: PgFactory) -> None:
    """Killed with -9 and started again at once: its old process is gone, no wait for the lease."""
    first, second = await pg_nodes("a"), await pg_nodes("a")
    dead = _instance(_gone_pid(), "cafe0002")
    assert dead_here(dead) and not dead_here(new_instance())
    assert await first.take_name(dead, stale_s=60) is None
    began = time.monotonic()
    async with started(node_of(second, lease_s=60)):
        pass
    assert time.monotonic() - began < 30


async def test_a_live_process_of_another_machine_with_this_host_name_is_not_taken_for_dead(
    pg_nodes: PgFactory,
) -> None:
    """Two machines named alike (cloned, both ``localhost``) with a copied configuration: the
    other's process id means nothing here, so the name it keeps fresh is not taken from it."""
    first, second = await pg_nodes("a"), await pg_nodes("a")
    elsewhere = _instance(_gone_pid(), "cafe0004", space="0badcafe")
    assert not dead_here(elsewhere)
    assert await first.take_name(elsewhere, stale_s=60) is None

    async def keep_fresh() -> None:
        while await first.keep_name(elsewhere, stale_s=60):
            await asyncio.sleep(1)  # as its rounds would, a third of its lease

    keeper = asyncio.create_task(keep_fresh())
    try:
        with pytest.raises(NodeNameInUse):
            await node_of(second, lease_s=3).start()
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)


async def test_a_node_whose_name_was_taken_while_it_stalled_steps_down_and_stops(
    pg_nodes: PgFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Stalled past a lease, another process took the name: its next round says so and ends."""
    first, second = await pg_nodes("a"), await pg_nodes("a")
    # a lease of 3 s: its next round (within a second) finds the taker's hold fresh, loaded or not
    node = node_of(first, lease_s=3)
    await node.start()
    try:
        assert await second.take_name("other-host:1:cafe0003", stale_s=0, dead=None) is None
        task = node.task
        assert task is not None
        with caplog.at_level(logging.ERROR, logger="daemon.leadership"):
            await until(task.done)
        assert isinstance(task.exception(), NodeNameInUse)
        assert not node.is_leader and not node.monitor.leading
        errors = [r.__dict__.get("event") for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == ["node.name_taken"]
    finally:
        await node.stop()
    assert await second.take_name("other-host:1:cafe0003", stale_s=60) is None, "not given back: not its"


@pytest.mark.parametrize(
    "restore",
    [
        "UPDATE node_names SET instance = 'old-host:1:-:cafe0005', seen_at = now() - interval '1 day'",
        "DELETE FROM node_names",
    ],
)
async def test_a_name_the_database_lost_is_kept_not_given_up(
    pg_nodes: PgFactory, postgres_url: str, restore: str
) -> None:
    """The database restored from a backup (or failed over) holds an older run's long-stale row, or
    none: no live process has the name, so the running node keeps it and goes on (it stopped for
    good with 78, every node at once)."""
    store = await pg_nodes("a")
    async with started(node_of(store, lease_s=0.6)) as node:
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            await conn.execute(restore)

            async def held_again() -> bool:
                cur = await conn.execute("SELECT instance FROM node_names WHERE name = %s", (store.node,))
                row = await cur.fetchone()
                return row is not None and row[0] != "old-host:1:-:cafe0005"

            await until(held_again)
        assert node.task is not None and not node.task.done()


async def test_nodes_with_names_of_their_own_start_side_by_side(pg_nodes: PgFactory) -> None:
    a, b = await pg_nodes("a"), await pg_nodes("b")
    async with started(node_of(a, lease_s=0.6)), started(node_of(b, lease_s=0.6)) as other:
        await asyncio.sleep(0)
        assert other.task is not None and not other.task.done()


def _gone_pid() -> int:
    """The id of a process of this host that has ended."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def _instance(pid: int, token: str, space: str | None = None) -> str:
    """An instance as :func:`new_instance` makes them, for process ``pid`` (of this host by default)."""
    host, _, here, _ = new_instance().split(":")
    return f"{host}:{pid}:{space or here}:{token}"
