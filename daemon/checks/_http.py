"""What the HTTP status checks share: one bounded fetch, JSON shape checks, and the run loop.

Every way a status endpoint can fail to give a usable answer (refused, timed out, a 404, a body
that is not JSON, a field of the wrong type, a value the vendor never documented) becomes one
error, :class:`StatusError`, whose status defaults to ``unknown``: a status page we cannot read
says nothing about the provider, so it is never ``ok`` and never ``down``.

Exceptions::

    StatusError (Exception)     the endpoint's answer is unusable; ``status`` is what the run reports
    ConfigError (ValueError)    the check's own settings are unusable (raised at construction only)

Reasons show URLs without their query string or user info, where a token may hide.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from daemon.core.model import CheckResult, CheckStatus

Verdict = tuple[CheckStatus, str]

#: Google's incidents.json holds a year of incidents; a few MiB is plenty for any status document
MAX_BODY_BYTES = 8 * 1024 * 1024
_REASON_MAX = 300
#: how bad each status is when several are combined: a sure ``down`` outweighs an ``unknown``
_SEVERITY = {
    CheckStatus.OK: 0,
    CheckStatus.DEGRADED: 1,
    CheckStatus.CREDENTIALS: 2,
    CheckStatus.UNKNOWN: 3,
    CheckStatus.DOWN: 4,
}


class StatusError(Exception):
    """The status endpoint gave no usable answer."""

    def __init__(self, reason: str, *, status: CheckStatus = CheckStatus.UNKNOWN) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class ConfigError(ValueError):
    """The check's settings are unusable."""


@dataclass(frozen=True, slots=True)
class Fetched:
    status_code: int
    body: bytes
    #: as :func:`shown`: fit for a reason
    url: str


def utc_now() -> datetime:
    return datetime.now(UTC)


def shown(url: str | httpx.URL) -> str:
    """``url`` fit for a reason or a log: scheme, host, port and path only."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(query=None, fragment=None, username=None, password=None))


def one_line(text: str, limit: int = _REASON_MAX) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def checked_url(url: str, what: str) -> str:
    """``url`` if it is an absolute http(s) URL; :class:`ConfigError` otherwise."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"{what}: not a URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"{what}: need an absolute http(s) URL, got {shown(url)!r}")
    return url


def worst(statuses: Iterable[CheckStatus]) -> CheckStatus:
    return max(statuses, key=_SEVERITY.__getitem__, default=CheckStatus.OK)


async def fetch(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    data: Mapping[str, str] | None = None,
    max_bytes: int = MAX_BODY_BYTES,
) -> Fetched:
    """One request, its whole body read within ``timeout_s`` per step; transport errors as StatusError."""
    where = shown(url)
    try:
        request = client.build_request(method, url, headers=headers, data=data, timeout=timeout_s)
        response = await client.send(request, stream=True)
        try:
            body = await _read_bounded(response, max_bytes, where)
        finally:
            await response.aclose()
    except httpx.TimeoutException as exc:
        raise StatusError(f"{where}: timed out after {timeout_s:g}s ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        detail = one_line(str(exc)) or type(exc).__name__
        raise StatusError(f"{where}: {detail}") from exc
    return Fetched(response.status_code, body, where)


async def _read_bounded(response: httpx.Response, max_bytes: int, where: str) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise StatusError(f"{where}: body larger than {max_bytes} bytes")
    return bytes(body)


def require_success(fetched: Fetched) -> Fetched:
    """``fetched`` if it is a 2xx; otherwise an ``unknown`` naming the status code."""
    code = fetched.status_code
    if 200 <= code < 300:
        return fetched
    hint = " (wrong URL or name?)" if code in (404, 410) else ""
    raise StatusError(f"{fetched.url}: HTTP {code}{hint}")


def parse_json(fetched: Fetched) -> object:
    try:
        return json.loads(fetched.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StatusError(f"{fetched.url}: not JSON ({one_line(str(exc), 80)})") from exc


async def fetch_json(
    client: httpx.AsyncClient, url: str, *, timeout_s: float, headers: Mapping[str, str] | None = None
) -> object:
    """GET ``url`` and return its JSON body; a non-2xx, or a body that is not JSON, is StatusError."""
    fetched = await fetch(client, "GET", url, timeout_s=timeout_s, headers=headers)
    return parse_json(require_success(fetched))


def as_dict(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise StatusError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def as_list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise StatusError(f"{where}: expected an array, got {type(value).__name__}")
    return value


def as_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise StatusError(f"{where}: expected a string, got {type(value).__name__}")
    return value


class HttpStatusCheck:
    """The run loop of an HTTP status check: subclasses give :meth:`verdict`, this times and wraps it.

    The client is injected (shared, closed by its owner) or made here (closed by :meth:`aclose`).
    The whole run, however many requests it makes, stays within ``timeout_s``.
    """

    def __init__(
        self,
        name: str,
        *,
        timeout_s: float,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout_s <= 0:
            raise ConfigError(f"check {name}: timeout must be positive, got {timeout_s}")
        self.name = name
        self.timeout_s = timeout_s
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(follow_redirects=True, timeout=timeout_s)
        self._clock = clock
        self._monotonic = monotonic

    async def run(self) -> CheckResult:
        started = self._monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                status, reason = await self.verdict()
        except TimeoutError:
            status, reason = CheckStatus.UNKNOWN, f"timed out after {self.timeout_s:g}s"
        except StatusError as exc:
            status, reason = exc.status, exc.reason
        reason = one_line(self.redact(reason))
        return CheckResult(self.name, status, reason, self._monotonic() - started, self._clock())

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    async def verdict(self) -> Verdict:
        raise NotImplementedError

    def redact(self, reason: str) -> str:
        """Checks holding a secret override this so the secret never reaches a reason."""
        return reason
