"""The generic HTTP check: GET a URL, expect a status code and, optionally, a value in its JSON.

For any health endpoint the specific checks do not know. The condition is data, never code: a
dotted path (``status.indicator``, ``components.0.status``; a number indexes an array) and
either ``equals`` one JSON value or ``in`` a list of them. Values compare by JSON type, so
``true`` is not ``1`` and ``"1"`` is not ``1``.

==================================================  ===========
what happened                                       status
==================================================  ===========
expected status code, condition holds (or none)     OK
expected status code, the value differs             DOWN
another status code                                 DOWN
401 / 403 (when not expected)                       CREDENTIALS
404 / 410 (when not expected)                       UNKNOWN: the URL is wrong, the service may be fine
unreachable, timed out, not JSON, path missing      UNKNOWN
==================================================  ===========
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import httpx

from daemon.checks._http import (
    ConfigError,
    HttpStatusCheck,
    StatusError,
    Verdict,
    checked_url,
    fetch,
    one_line,
    parse_json,
    utc_now,
)
from daemon.core.model import CheckStatus

JsonScalar = str | int | float | bool | None
_MISSING = object()


@dataclass(frozen=True, slots=True)
class HttpCondition:
    """What a healthy answer looks like. YAML's ``equals: x`` is ``accepted=(x,)``, ``in: [..]`` the list."""

    expect_status: int = 200
    #: dotted path into the JSON body; None checks the status code only
    path: str | None = None
    #: the value at ``path`` must be one of these
    accepted: tuple[JsonScalar, ...] = ()

    def __post_init__(self) -> None:
        if not 100 <= self.expect_status <= 599:
            raise ConfigError(f"expect_status must be an HTTP status code, got {self.expect_status}")
        if self.path is not None and any(not p for p in self.path.split(".")):
            raise ConfigError(f"path {self.path!r}: empty segment")
        if (self.path is None) != (not self.accepted):
            raise ConfigError("a path needs equals or in, and equals or in need a path")

    def holds(self, value: object) -> bool:
        return any(same_json(value, candidate) for candidate in self.accepted)


class HttpCheck(HttpStatusCheck):
    def __init__(
        self,
        name: str,
        url: str,
        *,
        condition: HttpCondition | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = checked_url(url, f"check {name}: url")
        self.condition = condition or HttpCondition()
        self._headers = dict(headers or {})
        super().__init__(name, timeout_s=timeout_s, client=client, clock=clock, monotonic=monotonic)

    async def verdict(self) -> Verdict:
        fetched = await fetch(self.client, "GET", self.url, timeout_s=self.timeout_s, headers=self._headers)
        condition = self.condition
        if fetched.status_code != condition.expect_status:
            return status_code_verdict(fetched.status_code, condition.expect_status, fetched.url)
        if condition.path is None:
            return CheckStatus.OK, f"{fetched.url}: HTTP {fetched.status_code}"
        value = lookup(parse_json(fetched), condition.path)
        shown = f"{fetched.url}: {condition.path} = {one_line(_shown(value), 80)}"
        if condition.holds(value):
            return CheckStatus.OK, shown
        expected = ", ".join(_shown(v) for v in condition.accepted)
        if len(condition.accepted) > 1:
            expected = f"one of {expected}"
        return CheckStatus.DOWN, f"{shown}, expected {expected}"

    def redact(self, reason: str) -> str:
        for value in self._headers.values():
            reason = reason.replace(value, "***") if value else reason
        return reason


def status_code_verdict(got: int, expected: int, url: str) -> Verdict:
    reason = f"{url}: HTTP {got}, expected {expected}"
    if got in (401, 403):
        return CheckStatus.CREDENTIALS, f"{reason} (credentials refused)"
    if got in (404, 410):
        return CheckStatus.UNKNOWN, f"{reason} (wrong URL?)"
    return CheckStatus.DOWN, reason


def lookup(document: object, path: str) -> object:
    """The value at dotted ``path``; a missing key or index is UNKNOWN (the shape changed)."""
    value = document
    for segment in path.split("."):
        value = _step(value, segment)
        if value is _MISSING:
            raise StatusError(f"{path}: nothing at {segment!r}")
    return value


def _step(value: object, segment: str) -> object:
    if isinstance(value, dict):
        return value.get(segment, _MISSING)
    if isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
        return value[int(segment)]
    return _MISSING


def same_json(a: object, b: object) -> bool:
    """JSON equality: booleans are not numbers, integers and floats compare by value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _shown(value: object) -> str:
    return json.dumps(value, default=str)
