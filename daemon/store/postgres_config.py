"""The PostgreSQL store's configuration, apart from the store so that loading it needs no psycopg."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr, field_validator

from daemon.configbase import DEFAULT_RETENTION, Duration, Model, PositiveInt, Retention


class PostgresStoreConfig(Model):
    #: libpq URL; ``?options=-csearch_path%3Dname`` puts the tables in a schema of their own
    url: SecretStr
    #: this daemon's name among the nodes; unique. A stable name lets a restarted node take its
    #: own claims back at once instead of after their lease (default: host name and process id)
    node: str | None = Field(default=None, min_length=1)
    pool_size: PositiveInt = 10
    connect_timeout: Duration = timedelta(seconds=5)
    #: high availability: the leader's lease (renewed every third of it); a dead leader's
    #: successor takes over within about this long
    leader_lease: Duration = timedelta(seconds=6)
    #: a check counts as down only when at least this many nodes' latest fresh results say so
    nodes_quorum: PositiveInt = 1
    #: a node's check result older than this no longer votes (cover the slowest check's interval)
    vantage_fresh: Duration = timedelta(seconds=60)
    #: finished notifications older than this are deleted (the leader, hourly); None: kept for ever
    retention: Retention = DEFAULT_RETENTION

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a URL starting with postgresql://")
        return value
