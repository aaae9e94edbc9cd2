"""A webhook URL's user:password@ goes as Basic credentials, never into logs or errors (loopback)."""

from __future__ import annotations

import base64
import logging
import traceback

import pytest

from channels.base import ChannelConfigError, ChannelError
from channels.webhook import WebhookChannel
from tests.servers import ScriptedResponse, WebhookReceiver
from tests.support import outbound_message

SECRET = "whsec_" + base64.b64encode(b"a-test-secret-that-is-long-enough!").decode()
PASSWORD = "s3cret-Canary:42"


def _with_userinfo(url: str, userinfo: str = "alice:s3cret-Canary%3A42") -> str:
    return url.replace("http://", f"http://{userinfo}@")


async def test_url_userinfo_is_sent_as_basic_auth() -> None:
    """user:password@ becomes Authorization: Basic (percent-decoded), and leaves the Host header."""
    with WebhookReceiver() as receiver:
        channel = WebhookChannel("hook", _with_userinfo(receiver.url), SECRET, allow_private=True)
        try:
            await channel.send(outbound_message(1))
        finally:
            await channel.aclose()
        [request] = await receiver.wait_for_async(1)
    expected = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert request.headers["authorization"] == expected
    assert request.headers["host"] == receiver.url.split("/")[2]
    assert request.path == "/hook"


async def test_url_with_a_user_only_sends_an_empty_password() -> None:
    """'token@host' is Basic 'token:' as curl and httpx send it."""
    with WebhookReceiver() as receiver:
        channel = WebhookChannel("hook", _with_userinfo(receiver.url, "tok"), SECRET, allow_private=True)
        try:
            await channel.send(outbound_message(1))
        finally:
            await channel.aclose()
        [request] = await receiver.wait_for_async(1)
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"tok:").decode()


async def test_url_credentials_never_reach_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    """A refused send (401) logs and raises without the password or its Basic encoding."""
    caplog.set_level(logging.DEBUG)
    with WebhookReceiver() as receiver:
        receiver.respond(ScriptedResponse(status=401))
        channel = WebhookChannel("hook", _with_userinfo(receiver.url), SECRET, allow_private=True)
        try:
            with pytest.raises(ChannelError) as caught:
                await channel.send(outbound_message(1))
        finally:
            await channel.aclose()
    text = caplog.text + "".join(traceback.format_exception(caught.value)) + repr(caught.value)
    encoded = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    for secret in ("s3cret-Canary", encoded):
        assert secret not in text


def test_url_credentials_and_an_authorization_header_is_a_config_error() -> None:
    """Both would leave unclear which the receiver is meant to get; the error quotes neither."""
    url = "https://alice:s3cret-Canary@hooks.example/x"
    with pytest.raises(ChannelConfigError) as caught:
        WebhookChannel("hook", url, SECRET, headers={"authorization": "Bearer t"})
    assert "s3cret-Canary" not in str(caught.value)
