"""The webhook channel's configuration of URL credentials. Pure, no sockets."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from daemon.build import secrets_of
from daemon.config import parse_config
from daemon.config_channels import WebhookChannelConfig

SECRET = "whsec_" + base64.b64encode(b"a-test-secret-that-is-long-enough!").decode()


def test_url_with_userinfo_is_accepted() -> None:
    """user:password@ in the URL is valid configuration: it is sent as Basic credentials."""
    config = WebhookChannelConfig(type="webhook", url="https://alice:pw@hooks.example/x", secret=SECRET)
    assert config.url == "https://alice:pw@hooks.example/x"


def test_url_userinfo_beside_an_authorization_header_is_refused() -> None:
    """Credentials in the URL and an Authorization header: refused at load, naming both."""
    with pytest.raises(ValidationError, match="Authorization"):
        WebhookChannelConfig(
            type="webhook",
            url="https://alice:pw@hooks.example/x",
            secret=SECRET,
            headers={"Authorization": "Bearer t"},
        )


def test_url_password_is_masked_in_logs() -> None:
    """The password of a user:password@ URL, as written, decoded and as the Basic credentials it is
    sent as, is redacted from every log line, like any other secret of the configuration."""
    text = CONFIG.replace("URL", "https://alice:p%40ss-SECRET-9@hooks.example.com/x")
    found = set(secrets_of(parse_config(text, filename="f.yaml", env={"WH": SECRET})).values())
    basic = base64.b64encode(b"alice:p@ss-SECRET-9").decode()
    assert {"p%40ss-SECRET-9", "p@ss-SECRET-9", basic} <= found
    plain = CONFIG.replace("URL", "https://hooks.example.com/x")
    plain_found = set(secrets_of(parse_config(plain, filename="f.yaml", env={"WH": SECRET})).values())
    assert plain_found == {SECRET, "tok-SECRET-123"}


CONFIG = """\
store: {path: /tmp/x.db}
api: {tokens: [{name: t, token: tok-SECRET-123}]}
provider:
  name: p
  smtp: {host: smtp.example.com}
channels:
  hook: {type: webhook, url: "URL", secret: "${WH}"}
routes:
  - {name: all, match: {}, healthy: [hook], outage: [hook]}
"""
