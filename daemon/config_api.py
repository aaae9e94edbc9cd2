"""Configuration of the HTTP API: its listener and the bearer tokens it accepts, with their scopes
and rate limits.

Field reference: ``docs/configuration.md`` (``api``). :func:`require_unique` (names given twice) is
shared with the routes' names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from daemon.configbase import Listener, LocatedError, Model, PositiveInt

Scope = Literal["send", "read", "admin"]
#: ``max_buffered_body_bytes`` by default: room for this many of the largest bodies at once
BUFFERED_BODIES = 8
ALL_SCOPES: tuple[Scope, ...] = ("send", "read", "admin")


class RateLimit(Model):
    """A token bucket: ``per_second`` on average, bursts of up to ``burst`` requests."""

    per_second: float = Field(gt=0)
    burst: PositiveInt = 1


class ApiToken(Model):
    name: str = Field(min_length=1)
    token: SecretStr
    #: send: submit notifications; read: status, trails, metrics, the status page; admin: override,
    #: drills, cancel. Give each system only what it needs.
    scopes: list[Scope] = Field(default_factory=lambda: list(ALL_SCOPES), min_length=1)
    rate_limit: RateLimit | None = None

    @field_validator("token")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("the token is empty")
        return value


class ApiConfig(Listener):
    listen: str = "127.0.0.1:8025"
    tokens: list[ApiToken] = Field(min_length=1)
    max_body_bytes: PositiveInt = 1024 * 1024
    #: the Alertmanager and Grafana webhooks' own: they send a group's alerts in one call, however
    #: many (about 1 KiB each), and answer a 4xx by sending it again at the next flush, never whole
    max_alert_body_bytes: PositiveInt = 16 * 1024 * 1024
    #: connections one process holds open on its listener (the API port; each intake worker on
    #: the workers' port); past it a new connection is answered 503 and closed at once
    max_connections: PositiveInt = 512
    #: of those, the most from one address (a client leaking connections must not take them
    #: all). None: half of max_connections. Behind a reverse proxy every client has its address
    max_connections_per_client: PositiveInt | None = None
    #: bytes of request bodies not yet complete one process holds at once; past it a request is
    #: answered 503. None: BUFFERED_BODIES times the larger body limit (128 MiB by default)
    max_buffered_body_bytes: PositiveInt | None = None

    @field_validator("tokens")
    @classmethod
    def _unique_names(cls, value: list[ApiToken]) -> list[ApiToken]:
        require_unique([t.name for t in value], "token name")
        return value

    @model_validator(mode="after")
    def _room_for_the_largest_body(self) -> ApiConfig:
        largest = max(self.max_body_bytes, self.max_alert_body_bytes)
        if self.max_buffered_body_bytes is not None and self.max_buffered_body_bytes < largest:
            message = (
                f"must be at least the largest body a request may send ({largest}, max_body_bytes "
                "and max_alert_body_bytes), or such a request would be refused for ever"
            )
            raise LocatedError(message, ("max_buffered_body_bytes",))
        return self

    @property
    def per_client_limit(self) -> int:
        """``max_connections_per_client``, or half of ``max_connections``."""
        if self.max_connections_per_client is not None:
            return self.max_connections_per_client
        return max(1, self.max_connections // 2)

    @property
    def buffered_body_limit(self) -> int:
        """``max_buffered_body_bytes``, or its default from the body limits."""
        if self.max_buffered_body_bytes is not None:
            return self.max_buffered_body_bytes
        return BUFFERED_BODIES * max(self.max_body_bytes, self.max_alert_body_bytes)


def require_unique(names: Sequence[str], what: str) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"duplicate {what}: {', '.join(repeated)}")
