"""Configuration of the delivery channels, one model per YAML ``type:``."""

from __future__ import annotations

import binascii
import re
from base64 import b64decode
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr

from daemon.configbase import Duration, EmailAddress, Model, PositiveInt, RetryConfig, SmtpConfig


class EmailChannelConfig(Model):
    type: Literal["email"]
    smtp: SmtpConfig | None = None
    mail_from: EmailAddress | None = None
    to: list[EmailAddress] = Field(default_factory=list)
    concurrency: PositiveInt = 4
    retry: RetryConfig | None = None


def _webhook_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    return value


def _webhook_secret(value: SecretStr) -> SecretStr:
    # Standard Webhooks: "whsec_" + base64 of the key, https://www.standardwebhooks.com/ (signing)
    text = value.get_secret_value().removeprefix("whsec_")
    try:
        key = b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("expected base64, optionally prefixed whsec_ (Standard Webhooks)") from None
    if len(key) < 16:
        raise ValueError("the key must decode to at least 16 bytes")
    return value


class WebhookChannelConfig(Model):
    type: Literal["webhook"]
    url: Annotated[str, AfterValidator(_webhook_url)]
    secret: Annotated[SecretStr, AfterValidator(_webhook_secret)]
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=10)
    concurrency: PositiveInt = 4
    retry: RetryConfig | None = None


ChannelConfig = Annotated[EmailChannelConfig | WebhookChannelConfig, Field(discriminator="type")]


def _channel_name(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", value):
        raise ValueError("channel names are lowercase letters, digits, '-' and '_'")
    return value


ChannelName = Annotated[str, AfterValidator(_channel_name)]
