"""SIGHUP and the SMTP smart host: the daemon on 127.0.0.1 with a YAML file, reloaded.

Users, allowed networks, recipient domains and rules apply at once, on open sessions too (a user
the reload removed sends nothing more); the listeners need a restart, which the reload says; a
certificate that cannot be loaded rejects the reload and the running intake stays as it was.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from daemon.app import Daemon
from daemon.config import load_config
from daemon.intake.smtp_auth import hash_password
from tests.servers import SmtpServer
from tests.support import config_template

TOKEN = "smtp-reload-token-0123456789"
# a cheap scrypt cost keeps the tests fast; the format and the code path are the production ones
ALICE = hash_password("alice-pw", ln=4, r=8, p=1)
MALLORY = hash_password("mallory-pw", ln=4, r=8, p=1)
BEFORE = f"""\
routes: [{{{{name: all, match: {{{{}}}}, healthy: [email], outage: defer}}}}]
intake:
  smtp:
    listen: "127.0.0.1:0"
    allow_plaintext_auth_on_loopback: true
    allowed_networks: [127.0.0.0/8]
    users:
      - {{{{name: alice, password_hash: "{ALICE}"}}}}
      - {{{{name: mallory, password_hash: "{MALLORY}"}}}}
"""
MESSAGE = b"From: app@example.com\r\nTo: ops@example.com\r\nSubject: reload\r\n\r\nbody\r\n"


@pytest.fixture
async def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Daemon]:
    monkeypatch.setenv("TOKEN", TOKEN)
    with SmtpServer() as provider:
        path = tmp_path / "backchannel.yaml"
        path.write_text(
            config_template(BEFORE).format(store=tmp_path / "o.db", api_port=0, smtp_port=provider.port)
        )
        running = Daemon(load_config(path), config_path=path)
        await running.start()
        try:
            yield running
        finally:
            await running.stop()


def rewrite(daemon: Daemon, old: str, new: str) -> None:
    assert daemon._config_path is not None
    text = daemon._config_path.read_text()
    assert old in text
    daemon._config_path.write_text(text.replace(old, new))
    daemon.reload()


def client(daemon: Daemon) -> aiosmtplib.SMTP:
    assert daemon.smtp is not None
    return aiosmtplib.SMTP(hostname="127.0.0.1", port=daemon.smtp.port, start_tls=False)


async def mail_from(smtp: aiosmtplib.SMTP) -> int:
    try:
        return (await smtp.mail("app@example.com")).code
    except aiosmtplib.SMTPSenderRefused as exc:
        return exc.code


async def test_a_reload_removes_a_user_and_a_network_at_once(daemon: Daemon) -> None:
    """Before: loopback sends without AUTH, mallory logs in. After: neither, not even on the
    session mallory opened before the reload; alice still sends."""
    async with client(daemon) as anonymous:
        assert await mail_from(anonymous) == 250
    mallorys = client(daemon)
    await mallorys.connect()
    await mallorys.login("mallory", "mallory-pw")
    rewrite(daemon, "    allowed_networks: [127.0.0.0/8]\n", "")
    rewrite(daemon, f'      - {{name: mallory, password_hash: "{MALLORY}"}}\n', "")
    async with client(daemon) as anonymous:
        assert await mail_from(anonymous) == 530
    assert await mail_from(mallorys) == 530
    mallorys.close()
    async with client(daemon) as again:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await again.login("mallory", "mallory-pw")
    async with client(daemon) as alice:
        await alice.login("alice", "alice-pw")
        _, reply = await alice.sendmail("app@example.com", ["ops@example.com"], MESSAGE)
    assert reply.startswith("2.0.0 OK: queued as")


async def test_a_listener_change_waits_for_a_restart_and_says_so(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    second = '    listen: "127.0.0.1:0"\n    submission_listen: "127.0.0.1:0"\n'
    with caplog.at_level(logging.WARNING):
        rewrite(daemon, '    listen: "127.0.0.1:0"\n', second)
    events = [r.__dict__ for r in caplog.records]
    said = [e.get("field") for e in events if e.get("event") == "config.restart_needed"]
    assert said == ["intake.smtp.submission_listen"]
    assert daemon.smtp is not None and daemon.smtp.submission_port is None


async def test_changed_checks_and_api_limits_wait_for_a_restart_and_say_so(
    daemon: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload applies routes, tokens and the intakes' rules; the provider's checks and the API's
    limits are built once, so changing them is logged as needing a restart, not silently ignored."""
    assert daemon._config_path is not None
    text = daemon._config_path.read_text()
    with caplog.at_level(logging.WARNING):
        rewrite(daemon, "every: 1h", "every: 2h")
        daemon._config_path.write_text(
            daemon._config_path.read_text().replace("tokens: [", "max_body_bytes: 2048, tokens: [", 1)
        )
        daemon.reload()
    said = [
        r.__dict__.get("field") for r in caplog.records if r.__dict__.get("event") == "config.restart_needed"
    ]
    assert said == ["provider", "provider", "api"]
    daemon._config_path.write_text(text)


async def test_a_certificate_that_cannot_be_loaded_rejects_the_reload(
    daemon: Daemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The file names a certificate that is not one: rejected with the file, line and field, and
    the running intake keeps its users and networks."""
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    tls = f'    tls: {{cert_file: "{tmp_path / "cert.pem"}", key_file: "{tmp_path / "cert.pem"}"}}\n'
    with caplog.at_level(logging.ERROR):
        rewrite(daemon, "    allowed_networks: [127.0.0.0/8]\n", tls)
    [failed] = [r for r in caplog.records if r.__dict__.get("event") == "config.reload_failed"]
    assert "backchannel.yaml:" in failed.getMessage()
    assert "intake.smtp.tls: the certificate or key cannot be loaded" in failed.getMessage()
    async with client(daemon) as anonymous:
        assert await mail_from(anonymous) == 250
