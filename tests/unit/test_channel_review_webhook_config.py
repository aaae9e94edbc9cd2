"""The webhook channel's configuration of URL credentials. Pure, no sockets."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

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
