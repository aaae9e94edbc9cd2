"""Building blocks of the configuration: durations, addresses and time zones, the frozen model base,
shared sections.

Every section model is frozen and forbids unknown keys, so a typo is an error naming the key.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

# --- durations ---------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_S = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION_HINT = "expected a duration such as 500ms, 15s, 5m, 1h30m or 1d"
#: the longest duration a setting takes: a century (Python's timedelta overflows near 2.7 million
#: years, and a date plus a long one overflows much sooner)
MAX_DURATION_S = 36_500 * 86_400.0


class LocatedError(ValueError):
    """A problem a validator finds elsewhere than where it runs (a whole-config check): ``loc`` is
    the path of the value at fault, relative to the validated model, so the error names its line."""

    def __init__(self, message: str, loc: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.loc = loc


def parse_duration(value: str | int | float) -> timedelta:
    """``"500ms"``, ``"15s"``, ``"5m"``, ``"1h30m"``, ``"1d"``; a bare number is seconds."""
    if isinstance(value, bool):
        raise ValueError(_DURATION_HINT)
    seconds = float(value) if isinstance(value, int | float) else _duration_seconds(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be finite and not negative")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"a duration must not exceed {MAX_DURATION_S // 86400:g}d")
    return timedelta(seconds=seconds)


def _duration_seconds(text: str) -> float:
    compact = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", compact):
        return float(compact)
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"invalid duration {text!r}: {_DURATION_HINT}")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def format_duration(value: timedelta) -> str:
    """The shortest text :func:`parse_duration` reads back as ``value``."""
    ms = round(value.total_seconds() * 1000)
    out = ""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        out += f"{count}{unit}" if count else ""
    return out or "0s"


def positive_duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, str | int | float):
        result = parse_duration(value)
    else:
        raise ValueError(_DURATION_HINT)
    if result <= timedelta(0):
        raise ValueError("a duration must be positive")
    return result


Duration = Annotated[
    timedelta,
    BeforeValidator(positive_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ms|s|m|h|d)?)+\s*$"}),
]
PositiveInt = Annotated[int, Field(ge=1)]

#: the shortest ``store.retention``: the recovery's catch-up reads what went out during the outage
#: (a day-long one, and a day before it), and an operator reads last week's history
MIN_RETENTION = timedelta(days=7)


def _retention(value: timedelta | None) -> timedelta | None:
    if value is not None and value < MIN_RETENTION:
        raise ValueError(f"must be at least {format_duration(MIN_RETENTION)} (or null: kept for ever)")
    return value


#: how long finished notifications are kept (docs/operations.md, "Retention"); None: for ever
Retention = Annotated[Duration | None, AfterValidator(_retention)]
DEFAULT_RETENTION = timedelta(days=30)


def _email_address(value: str) -> str:
    if not re.fullmatch(r"[^@\s]+@[^@\s]+", value):
        raise ValueError("expected an email address like ops@example.com")
    return value


EmailAddress = Annotated[str, AfterValidator(_email_address)]


def _not_empty(value: SecretStr) -> SecretStr:
    # a reference that resolved to nothing (a blank line of an environment file, an empty credential
    # file) would fail only when the secret is used: for a backup channel, during the outage
    if not value.get_secret_value():
        raise ValueError("empty: does its variable or file hold the secret?")
    return value


#: a secret field: masked everywhere, and never empty
Secret = Annotated[SecretStr, AfterValidator(_not_empty)]


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {value!r} (e.g. Europe/Berlin, UTC)") from None
    return value


TimeZoneName = Annotated[str, AfterValidator(_zone)]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


LOGIN_BASE = "https://login.microsoftonline.com"
OUTLOOK_SCOPE = "https://outlook.office365.com/.default"


class OAuth2Config(Model):
    """``oauth2:`` under an SMTP or IMAP section: authenticate with XOAUTH2 instead of a password."""

    #: Entra ID tenant (id or domain); gives the token URL unless ``token_url`` is set
    tenant: str | None = Field(None, min_length=1)
    token_url: str | None = None
    client_id: str = Field(min_length=1)
    client_secret: Secret
    scope: str = OUTLOOK_SCOPE
    #: how long the token request may take
    timeout: Duration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _one_endpoint(self) -> OAuth2Config:
        if (self.tenant is None) == (self.token_url is None):
            raise ValueError("give exactly one of tenant (Microsoft Entra ID) or token_url")
        if self.token_url is not None:
            parts = urlsplit(self.token_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("token_url: need an absolute http(s) URL")
        return self

    def endpoint(self) -> str:
        if self.token_url is not None:
            return self.token_url
        return f"{LOGIN_BASE}/{quote(self.tenant or '', safe='')}/oauth2/v2.0/token"


class SmtpConfig(Model):
    host: str = Field(min_length=1)
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    tls: bool = False
    username: str | None = None
    password: Secret | None = None
    #: XOAUTH2 with a client-credentials token instead of a password (Microsoft 365 without basic auth)
    oauth2: OAuth2Config | None = None
    timeout: Duration = timedelta(seconds=10)
    verify_tls: bool = True
    ca_file: Path | None = None
    helo: str | None = Field(None, pattern=r"^\S+$")

    @model_validator(mode="before")
    @classmethod
    def _implicit_tls_defaults(cls, data: Any) -> Any:
        # `tls: true` alone means SMTPS: port 465 and no STARTTLS on top (RFC 8314 section 3.3)
        if isinstance(data, dict) and data.get("tls") is True:
            return {"starttls": False, "port": 465, **data}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> SmtpConfig:
        if self.tls and self.starttls:
            raise ValueError("starttls and tls are exclusive: tls is implicit TLS (port 465)")
        if self.password is not None and self.oauth2 is not None:
            raise ValueError("give password or oauth2, not both")
        if (self.username is None) != (self.password is None and self.oauth2 is None):
            raise ValueError("username goes with a password or oauth2")
        return self


class RetryConfig(Model):
    initial: Duration = timedelta(seconds=1)
    max: Duration = timedelta(minutes=5)
    multiplier: float = Field(2.0, ge=1.0)
    max_attempts: PositiveInt = 10

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.initial > self.max:
            raise ValueError("initial must not exceed max")
        return self


class Listener(Model):
    """A section that listens on ``listen`` (host:port, checked when read): ``host`` and ``port``."""

    listen: str

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        split_listen(value)
        return value

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


def split_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8025"`` or ``"[::1]:8025"`` to (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError("expected host:port, e.g. 127.0.0.1:8025 or [::1]:8025")
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1], int(port)
    if ":" in host:
        raise ValueError("write an IPv6 address in brackets, e.g. [::1]:8025")
    return host, int(port)
