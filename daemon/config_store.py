"""Configuration of the store: the embedded SQLite file (``path:``) or PostgreSQL (``url:``).

Field reference: ``docs/configuration.md`` (``store``). The PostgreSQL model lives apart, in
:mod:`daemon.store.postgres_config`; this module draws the union the ``store:`` key is parsed into.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import Discriminator, Tag

from daemon.configbase import DEFAULT_RETENTION, Duration, Model, Retention
from daemon.store.postgres_config import PostgresStoreConfig


class SqliteStoreConfig(Model):
    """The embedded store: one SQLite file (WAL, synced before every acknowledgement), one daemon."""

    path: Path
    busy_timeout: Duration = timedelta(seconds=5)
    retention: Retention = DEFAULT_RETENTION


def _store_kind(value: Any) -> str:
    # One branch's errors, not both: a file with `url:` is a PostgreSQL store, anything else SQLite.
    if isinstance(value, dict) and "url" in value:
        return "postgres"
    return "postgres" if isinstance(value, PostgresStoreConfig) else "sqlite"


StoreConfig = Annotated[
    Annotated[SqliteStoreConfig, Tag("sqlite")] | Annotated[PostgresStoreConfig, Tag("postgres")],
    Discriminator(_store_kind),
]
