"""slack-sdk requests made by SlackChannel, checked by Prism against Slack's own OpenAPI spec."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from channels.base import Acknowledgement, OutboundMessage
from channels.slack import THREAD_LABEL, SlackChannel

TOKEN = "xoxb-contract-test-token"


def _message(**overrides: object) -> OutboundMessage:
    fields: dict[str, object] = {
        "notification_id": "ntf_contract",
        "idempotency_key": "ntf_contract",
        "severity": "critical",
        "subject": "Database primary down",
        "body": "Replica lag > 30s & rising <see runbook>",
        "created_at": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    }
    fields.update(overrides)
    return OutboundMessage(**fields)  # type: ignore[arg-type]


def _channel(prism: str, targets: tuple[str, ...]) -> SlackChannel:
    return SlackChannel("slack", token=TOKEN, targets=targets, base_url=f"{prism}/api/", pace=100)


async def test_post_message_to_channel_is_accepted(slack_prism: str) -> None:
    """chat.postMessage with blocks, text, metadata and a thread passes the spec."""
    channel = _channel(slack_prism, ("C0123ABCD",))
    message = _message(labels={THREAD_LABEL: "1503435956.000247"})
    receipt = await channel.send(message)
    assert receipt.remote_id == "C1H9RESGL:1503435956.000247"


async def test_edit_after_acknowledgement_is_accepted(slack_prism: str) -> None:
    """chat.update of a posted message, its button replaced by who acknowledged, passes the spec."""
    channel = _channel(slack_prism, ("C0123ABCD",))
    ack = Acknowledgement("alice", "slack", datetime(2024, 5, 1, 12, 34, tzinfo=UTC))
    message = _message(acknowledgeable=True)
    assert await channel.acknowledged("C1H9RESGL:1503435956.000247", message, ack) == 1


def test_edit_without_ts_is_rejected(slack_prism: str) -> None:
    """A chat.update without the ts of the message to edit is refused by the spec."""
    client = WebClient(TOKEN, f"{slack_prism}/api/", retry_handlers=[])
    with pytest.raises(SlackApiError) as caught:
        client.api_call("chat.update", json={"channel": "C0123ABCD", "text": "no ts"})
    assert caught.value.response.status_code == 422
    assert "ts" in caught.value.response.headers.get("sl-violations", "")


async def test_lookup_by_email_then_post_is_accepted(slack_prism: str) -> None:
    """users.lookupByEmail then chat.postMessage to the user id pass the spec."""
    channel = _channel(slack_prism, ("spengler@ghostbusters.example.com",))
    receipt = await channel.send(_message())
    assert receipt.remote_id is not None


async def test_incoming_webhook_is_accepted(slack_prism: str) -> None:
    """The incoming-webhook body SlackChannel sends passes the spec."""
    channel = SlackChannel("hook", webhook_url=f"{slack_prism}/services/T000/B000/XXXX", pace=100)
    receipt = await channel.send(_message())
    assert receipt.channel == "hook"


def test_post_message_without_channel_is_rejected(slack_prism: str) -> None:
    """A chat.postMessage without its required channel is refused by the spec."""
    client = WebClient(TOKEN, f"{slack_prism}/api/", retry_handlers=[])
    with pytest.raises(SlackApiError) as caught:
        client.api_call("chat.postMessage", json={"text": "no channel"})
    assert caught.value.response.status_code == 422
    assert "channel" in caught.value.response.headers.get("sl-violations", "")


def test_post_message_without_token_is_rejected(slack_prism: str) -> None:
    """A Web API call without a bearer token is refused (the spec requires auth)."""
    client = WebClient(None, f"{slack_prism}/api/", retry_handlers=[])
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="C0123ABCD", text="no token")
    assert caught.value.response.status_code == 401


def test_webhook_without_text_or_blocks_is_rejected(slack_prism: str) -> None:
    """An incoming-webhook body with neither text nor blocks is refused."""
    client = WebhookClient(f"{slack_prism}/services/T000/B000/XXXX", retry_handlers=[])
    response = client.send_dict({"unfurl_links": False})
    assert response.status_code in (400, 422)
    assert "sl-violations" in {name.lower() for name in response.headers}
