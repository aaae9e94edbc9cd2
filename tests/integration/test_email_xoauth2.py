"""The email channel logs in with SASL XOAUTH2 when given a token (Microsoft 365 without basic auth)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import trustme

from channels.base import ChannelError, OutboundMessage
from channels.email import EmailChannel, SmtpSettings
from tests.integration.smtp_check_server import HOST, CheckSmtpServer

USER = "ops@example.test"
MESSAGE = OutboundMessage(
    notification_id="n1", idempotency_key="n1", severity="critical", subject="db down", body="b",
    created_at=datetime(2026, 11, 27, tzinfo=UTC), recipients=("oncall@example.test",),
)  # fmt: skip


def channel(port: int, ca_file: str, token: str) -> EmailChannel:
    async def current() -> str:
        return token

    settings = SmtpSettings(
        HOST, port, starttls=True, username=USER, ca_file=ca_file, timeout_s=10, token=current
    )
    return EmailChannel("email", settings, mail_from=USER)


async def test_xoauth2_token_is_presented_and_mail_sent(tls: tuple[trustme.LeafCert, str]) -> None:
    """With a token provider the channel authenticates by XOAUTH2 and the message is accepted."""
    cert, ca_file = tls
    async with CheckSmtpServer(tls="starttls", cert=cert) as server:
        server.tokens.add("tok-1")
        receipt = await channel(server.port, ca_file, "tok-1").send(MESSAGE)
    assert server.bearer_tokens == ["tok-1"]
    assert receipt.channel == "email"


async def test_refused_token_is_an_error_naming_authentication(tls: tuple[trustme.LeafCert, str]) -> None:
    """A token the server refuses fails the send; the token is not in the error text."""
    cert, ca_file = tls
    async with CheckSmtpServer(tls="starttls", cert=cert) as server:
        with pytest.raises(ChannelError) as failed:
            await channel(server.port, ca_file, "tok-stale").send(MESSAGE)
    assert "tok-stale" not in str(failed.value)
    assert server.bearer_tokens == ["tok-stale"]
