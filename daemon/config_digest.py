"""Configuration of burst digests (docs/digests.md), one block per paced channel."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from daemon.configbase import Duration, Model, PositiveInt
from daemon.core.digest import SINCE


def _link(value: str) -> str:
    """An http(s) URL or an absolute path on this daemon; ``{since}`` is its one placeholder."""
    rest = value.replace(SINCE, "")
    if "{" in rest or "}" in rest:
        raise ValueError(f"the only placeholder is {SINCE}")
    parts = urlsplit(value)
    if not (value.startswith("/") or (parts.scheme in ("http", "https") and parts.hostname)):
        raise ValueError("expected an http:// or https:// URL, or a path such as /v1/notifications")
    return value


class DigestConfig(Model):
    """When a backlog would take longer than ``drain_target`` to send at the channel's pace, digest it."""

    enabled: bool = True
    drain_target: Duration = timedelta(seconds=30)
    #: the most deliveries one digest may carry (and one claim may take)
    max_items: PositiveInt = Field(500, le=10_000)
    #: subjects listed, most important first
    top: int = Field(5, ge=0, le=50)
    #: where the full list is: this daemon's API by default, or a status page
    link: Annotated[str, AfterValidator(_link)] | None = "/v1/notifications?since={since}"


class SmsDigestConfig(DigestConfig):
    #: the SMS segments one digest may take (160 GSM-7 characters each, 153 when concatenated)
    segments: int = Field(1, ge=1, le=10)
