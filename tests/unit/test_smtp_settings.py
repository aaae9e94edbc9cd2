"""One builder turns ``smtp:`` configuration into the settings the email channel and SMTP check share."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from channels.email import SmtpSettings
from daemon.build import smtp_settings
from daemon.configbase import SmtpConfig


def test_every_smtp_option_reaches_the_settings() -> None:
    """Each option of ``smtp:`` lands in its field, the password revealed and the timeout in seconds."""
    config = SmtpConfig(
        host="smtp.example.test", port=465, tls=True, starttls=False, username="u@example.test",
        password="pw", timeout=timedelta(seconds=3), verify_tls=False, ca_file=Path("/etc/ca.pem"),
        helo="relay.example.test",
    )  # fmt: skip
    assert smtp_settings(config) == SmtpSettings(
        host="smtp.example.test", port=465, starttls=False, tls=True, username="u@example.test",
        password="pw", timeout_s=3.0, verify_tls=False, ca_file="/etc/ca.pem", helo="relay.example.test",
    )  # fmt: skip


def test_token_is_only_the_callers() -> None:
    """With oauth2 the builder adds no token of its own: the channel passes one, the check its TokenSource."""
    config = SmtpConfig.model_validate(
        {
            "host": "smtp.example.test",
            "username": "u@example.test",
            "oauth2": {"tenant": "contoso.test", "client_id": "c", "client_secret": "s"},
        }
    )

    async def token() -> str:
        return "t"

    assert smtp_settings(config).token is None
    assert smtp_settings(config, token=token).token is token
