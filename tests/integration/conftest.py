"""Store backends for integration tests: SQLite in ``tmp_path``, PostgreSQL in a throwaway schema.

PostgreSQL is the server on 127.0.0.1:5432 (trust auth, database ``test``) unless
``BACKCHANNEL_TEST_POSTGRES_URL`` names another. Each test gets a schema of its own, dropped
afterwards, so test runs sharing the server never see each other's rows. Without a reachable
server the PostgreSQL tests skip, saying why; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import trustme

from daemon.store.base import Store
from daemon.store.postgres import PostgresStore
from daemon.store.sqlite import SqliteStore
from tests.integration.smtp_check_server import HOST

POSTGRES_URL = os.environ.get("BACKCHANNEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

StoreFactory = Callable[[], Store]
PgFactory = Callable[..., Awaitable[PostgresStore]]


def admin(url: str = POSTGRES_URL) -> psycopg.Connection[tuple[object, ...]]:
    """A plain connection for setting up and inspecting the server around a test."""
    return psycopg.connect(url, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The server's URL, once it has answered; skip (fail under CI=true) when it does not."""
    try:
        with admin() as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = f"PostgreSQL unreachable at {POSTGRES_URL}: {str(exc).strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the store suite must run on PostgreSQL)")
        pytest.skip(f"{reason}; set BACKCHANNEL_TEST_POSTGRES_URL or start one; CI=true makes this fail")
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose tables land in a fresh schema, dropped with everything in it after the test."""
    schema = f"bc_test_{uuid.uuid4().hex[:12]}"
    with admin(postgres_server) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in postgres_server else "?"
    yield f"{postgres_server}{separator}options=-csearch_path%3D{schema}"
    with admin(postgres_server) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def tls(tmp_path: Path) -> tuple[trustme.LeafCert, str]:
    """A certificate for the local test servers (127.0.0.1 and localhost), and the file of the CA
    that issued it, for the clients to trust."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca.issue_cert(HOST, "localhost"), str(ca_file)


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Unopened stores on one backing database, once per backend; each call is another node."""
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "outbox.db")
    url: str = request.getfixturevalue("postgres_url")
    return lambda: PostgresStore(url, reconnect_s=0.1)


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[Store]:
    s = make_store()
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def pg_nodes(postgres_url: str) -> AsyncIterator[PgFactory]:
    """Open PostgreSQL stores ("nodes") on one schema; all are closed after the test.

    Node names get a suffix unique to the test: a test killing a node's connections by name
    must not touch another test run's on the same server.
    """
    opened: list[PostgresStore] = []
    suffix = uuid.uuid4().hex[:8]

    async def node(name: str = "node") -> PostgresStore:
        s = PostgresStore(postgres_url, node=f"{name}-{suffix}", reconnect_s=0.1)
        await s.open()
        opened.append(s)
        return s

    yield node
    for s in opened:
        await s.close()
