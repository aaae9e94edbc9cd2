"""The SMTP check against a real SMTP server on 127.0.0.1: one test per outcome."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme

from channels.email import SmtpSettings
from daemon.checks.base import Check
from daemon.checks.oauth import TokenSource
from daemon.checks.smtp import SmtpCheck, SmtpCheckConfigError
from daemon.configbase import OAuth2Config
from daemon.core.model import CheckResult, CheckStatus
from tests.integration.smtp_check_server import HOST, CheckSmtpServer, refusing_port
from tests.integration.status_server import StatusServer, json_reply

USER, PASSWORD = "probe@example.test", "s3cret-Pa55"
#: generous for a loaded 2-core machine; only the timeout tests use short ones
TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert(HOST, "localhost")


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def settings(port: int, **overrides: Any) -> SmtpSettings:
    plain = SmtpSettings(host=HOST, port=port, starttls=False, helo="probe.test")
    return dataclasses.replace(plain, **overrides)


async def probe(
    port: int, *, timeout_s: float = TIMEOUT_S, cert_warn_days: int = 14, **overrides: Any
) -> CheckResult:
    check = SmtpCheck("smtp", settings(port, **overrides), timeout_s=timeout_s, cert_warn_days=cert_warn_days)
    try:
        return await check.run()
    finally:
        await check.aclose()


@pytest.fixture
async def plain() -> AsyncIterator[CheckSmtpServer]:
    async with CheckSmtpServer() as server:
        yield server


@pytest.fixture
async def submission(cert: trustme.LeafCert) -> AsyncIterator[CheckSmtpServer]:
    async with CheckSmtpServer(tls="starttls", cert=cert, credentials=(USER, PASSWORD)) as server:
        yield server


def test_smtp_check_is_a_check() -> None:
    """SmtpCheck satisfies the Check protocol the scheduler runs."""
    assert isinstance(SmtpCheck("smtp", settings(25), timeout_s=1.0), Check)


async def test_healthy_server_is_ok(plain: CheckSmtpServer) -> None:
    """A server that answers every stage is OK, with its latency measured."""
    result = await probe(plain.port)
    assert result.status is CheckStatus.OK, result.reason
    assert result.reason == "ok: greeting, ehlo, noop, quit"
    assert 0 < result.latency_s < TIMEOUT_S


async def test_starttls_and_auth_with_trusted_ca_is_ok(submission: CheckSmtpServer, ca_file: str) -> None:
    """STARTTLS verified against the configured CA, then AUTH, is OK."""
    result = await probe(submission.port, starttls=True, ca_file=ca_file, username=USER, password=PASSWORD)
    assert result.status is CheckStatus.OK, result.reason
    assert result.reason == "ok: greeting, ehlo, starttls, ehlo after starttls, auth, noop, quit"


async def test_implicit_tls_is_ok(cert: trustme.LeafCert, ca_file: str) -> None:
    """Implicit TLS (port 465 style) with a trusted certificate is OK."""
    async with CheckSmtpServer(tls="implicit", cert=cert, credentials=(USER, PASSWORD)) as server:
        result = await probe(server.port, tls=True, ca_file=ca_file, username=USER, password=PASSWORD)
    assert result.status is CheckStatus.OK, result.reason


async def test_unverified_tls_accepts_self_signed(submission: CheckSmtpServer) -> None:
    """With verify_tls off, an untrusted certificate is accepted."""
    result = await probe(submission.port, starttls=True, verify_tls=False)
    assert result.status is CheckStatus.OK, result.reason


async def test_rejected_credentials_are_credentials_not_down(
    submission: CheckSmtpServer, ca_file: str
) -> None:
    """535 to AUTH means renew the credentials, not a provider outage."""
    result = await probe(submission.port, starttls=True, ca_file=ca_file, username=USER, password="wrong-pw")
    assert result.status is CheckStatus.CREDENTIALS
    assert result.reason.startswith("auth: 535 ")
    assert "credentials need renewing" in result.reason
    assert "wrong-pw" not in result.reason


@pytest.mark.parametrize(
    ("reply", "kind"),
    [("421 4.3.2 Service not available", "temporary 4xx"), ("554 5.3.2 No", "permanent 5xx")],
)
async def test_error_greeting_is_down(plain: CheckSmtpServer, reply: str, kind: str) -> None:
    """A 4xx or 5xx greeting is DOWN, the reason naming the stage and the reply."""
    plain.script.greeting = reply
    result = await probe(plain.port)
    assert result.status is CheckStatus.DOWN
    assert result.reason == f"greeting: {reply} ({kind})"


async def test_ehlo_5xx_is_down(plain: CheckSmtpServer) -> None:
    """A 5xx to EHLO is DOWN."""
    plain.script.ehlo = "550 5.7.1 Go away"
    result = await probe(plain.port)
    assert result.status is CheckStatus.DOWN
    assert result.reason == "ehlo: 550 5.7.1 Go away (permanent 5xx)"


async def test_noop_4xx_is_down(plain: CheckSmtpServer) -> None:
    """A 4xx late in the conversation is DOWN, called temporary."""
    plain.script.noop = "451 4.3.0 Local error"
    result = await probe(plain.port)
    assert result.status is CheckStatus.DOWN
    assert result.reason == "noop: 451 4.3.0 Local error (temporary 4xx)"


async def test_refused_connection_is_down() -> None:
    """A refused TCP connection is DOWN."""
    with refusing_port() as port:
        result = await probe(port)
    assert result.status is CheckStatus.DOWN
    assert result.reason == f"connect: connection refused by {HOST}:{port}"


async def test_silent_server_times_out_at_greeting(plain: CheckSmtpServer) -> None:
    """A server that accepts but never greets is DOWN once the overall timeout passes."""
    plain.script.silent = True
    result = await probe(plain.port, timeout_s=0.5)
    assert result.status is CheckStatus.DOWN
    assert result.reason == "timed out after 0.5s at stage greeting"
    assert 0.45 <= result.latency_s < 3.0


async def test_untrusted_certificate_is_down(submission: CheckSmtpServer) -> None:
    """A certificate that does not verify is DOWN, saying why."""
    result = await probe(submission.port, starttls=True)
    assert result.status is CheckStatus.DOWN
    assert result.reason.startswith("starttls: TLS certificate rejected: ")
    assert "certificate" in result.reason.removeprefix("starttls: TLS certificate rejected: ")


async def test_tls_handshake_failure_is_down(plain: CheckSmtpServer) -> None:
    """Implicit TLS against a plaintext server fails the handshake: DOWN."""
    result = await probe(plain.port, tls=True)
    assert result.status is CheckStatus.DOWN
    assert result.reason.startswith("tls handshake/greeting: TLS handshake failed: ")


async def test_starttls_not_offered_is_down(plain: CheckSmtpServer) -> None:
    """A server that stops offering STARTTLS is DOWN: the channel would refuse to send."""
    result = await probe(plain.port, starttls=True)
    assert result.status is CheckStatus.DOWN
    assert result.reason.startswith("starttls: ")
    assert "not supported" in result.reason


async def test_unresolvable_host_is_unknown() -> None:
    """A name that does not resolve is most often our own network: UNKNOWN."""
    result = await probe(25, host="no-such-host.invalid")
    assert result.status is CheckStatus.UNKNOWN
    assert result.reason.startswith("resolve: cannot resolve no-such-host.invalid")


async def test_password_is_redacted_from_server_replies(plain: CheckSmtpServer) -> None:
    """Even a server echoing the password back cannot put it in the reason."""
    plain.script.ehlo = f"554 5.7.1 not with {PASSWORD}"
    result = await probe(plain.port, username=USER, password=PASSWORD)
    assert PASSWORD not in result.reason
    assert result.reason == "ehlo: 554 5.7.1 not with *** (permanent 5xx)"


async def test_result_time_comes_from_the_injected_clock(plain: CheckSmtpServer) -> None:
    """The result's time and latency come from the injected clocks."""
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    ticks: Iterator[float] = iter([100.0, 100.25])
    check = SmtpCheck(
        "named", settings(plain.port), timeout_s=TIMEOUT_S, clock=lambda: at, monotonic=lambda: next(ticks)
    )
    result = await check.run()
    assert (result.check, result.at, result.latency_s) == ("named", at, 0.25)


def test_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    """A CA file that cannot be loaded fails at construction, not at every run."""
    with pytest.raises(SmtpCheckConfigError, match="cannot load CA file"):
        SmtpCheck("smtp", settings(25, ca_file=str(tmp_path / "missing.pem")), timeout_s=1.0)


def test_line_break_in_helo_is_a_config_error() -> None:
    """A HELO name that would inject a command fails at construction."""
    with pytest.raises(SmtpCheckConfigError, match=r"local_hostname .*prohibited"):
        SmtpCheck("smtp", settings(25, helo="probe.test\r\nRSET"), timeout_s=1.0)


def test_channel_token_in_settings_is_a_config_error() -> None:
    """The channel's token callable is refused: the check needs a TokenSource to drop and redact tokens."""

    async def token() -> str:
        return "t"

    with pytest.raises(SmtpCheckConfigError, match="token_source"):
        SmtpCheck("smtp", settings(25, token=token), timeout_s=1.0)


# --- certificate expiry ------------------------------------------------------------------------


def expiring_cert(ca: trustme.CA, days: float) -> trustme.LeafCert:
    return ca.issue_cert(HOST, not_after=datetime.now(UTC) + timedelta(days=days))


async def test_certificate_expiring_soon_is_degraded(ca: trustme.CA, ca_file: str) -> None:
    """A verified certificate with fewer than cert_warn_days left is DEGRADED, naming the date."""
    async with CheckSmtpServer(tls="starttls", cert=expiring_cert(ca, 5.5)) as server:
        result = await probe(server.port, starttls=True, ca_file=ca_file)
    assert result.status is CheckStatus.DEGRADED, result.reason
    assert result.reason.startswith("TLS certificate expires in 5 day(s), at ")
    assert result.reason.endswith("UTC: renew it")


async def test_certificate_with_time_left_is_ok(ca: trustme.CA, ca_file: str) -> None:
    """A certificate beyond the warning window is OK; so is a near one with the warning off."""
    async with CheckSmtpServer(tls="starttls", cert=expiring_cert(ca, 30)) as server:
        far = await probe(server.port, starttls=True, ca_file=ca_file)
    async with CheckSmtpServer(tls="starttls", cert=expiring_cert(ca, 2)) as server:
        off = await probe(server.port, starttls=True, ca_file=ca_file, cert_warn_days=0)
    assert (far.status, off.status) == (CheckStatus.OK, CheckStatus.OK), (far.reason, off.reason)


async def test_unverified_certificate_expiry_is_not_judged(ca: trustme.CA) -> None:
    """With verify_tls off the certificate's dates are not trustworthy, so they give no verdict."""
    async with CheckSmtpServer(tls="starttls", cert=expiring_cert(ca, 1)) as server:
        result = await probe(server.port, starttls=True, verify_tls=False)
    assert result.status is CheckStatus.OK, result.reason


# --- XOAUTH2 -----------------------------------------------------------------------------------

CLIENT_SECRET = "client-secret-Zz9"


@pytest.fixture
async def token_server() -> AsyncIterator[StatusServer]:
    async with StatusServer() as server:
        yield server


def token_source(server: StatusServer) -> TokenSource:
    config = OAuth2Config(token_url=f"{server.url}/token", client_id="app-1", client_secret=CLIENT_SECRET)
    return TokenSource(config)


def token_reply(value: str) -> Any:
    return json_reply({"token_type": "Bearer", "expires_in": 3599, "access_token": value})


async def oauth_probe(port: int, tokens: TokenSource, ca_file: str, runs: int = 1) -> list[CheckResult]:
    overrides = {"starttls": True, "ca_file": ca_file, "username": USER}
    check = SmtpCheck("smtp", settings(port, **overrides), timeout_s=TIMEOUT_S, token_source=tokens)
    try:
        return [await check.run() for _ in range(runs)]
    finally:
        await check.aclose()


async def test_xoauth2_token_is_fetched_once_and_accepted(
    cert: trustme.LeafCert, ca_file: str, token_server: StatusServer
) -> None:
    """XOAUTH2 presents a client-credentials token; the cached token serves the next run too."""
    token_server.serve("/token", token_reply("tok-1"))
    async with CheckSmtpServer(tls="starttls", cert=cert) as server:
        server.tokens.add("tok-1")
        results = await oauth_probe(server.port, token_source(token_server), ca_file, runs=2)
    assert [r.status for r in results] == [CheckStatus.OK, CheckStatus.OK], results[0].reason
    assert server.bearer_tokens == ["tok-1", "tok-1"]
    [request] = token_server.requests_to("/token")
    assert request.form() == {
        "grant_type": "client_credentials", "client_id": "app-1",
        "client_secret": CLIENT_SECRET, "scope": "https://outlook.office365.com/.default",
    }  # fmt: skip


async def test_refused_xoauth2_token_is_credentials_and_renewed(
    cert: trustme.LeafCert, ca_file: str, token_server: StatusServer
) -> None:
    """A token the server refuses is CREDENTIALS and is dropped: the next run fetches a new one."""
    token_server.serve("/token", token_reply("tok-old"), token_reply("tok-new"))
    async with CheckSmtpServer(tls="starttls", cert=cert) as server:
        server.tokens.add("tok-new")
        first, second = await oauth_probe(server.port, token_source(token_server), ca_file, runs=2)
    assert first.status is CheckStatus.CREDENTIALS, first.reason
    assert first.reason.startswith("auth: 535 ")
    assert second.status is CheckStatus.OK, second.reason
    assert server.bearer_tokens == ["tok-old", "tok-new"]


async def test_token_endpoint_refusal_is_credentials(
    cert: trustme.LeafCert, ca_file: str, token_server: StatusServer
) -> None:
    """An identity platform refusing the client (400 invalid_client) is CREDENTIALS, secret hidden."""
    refusal = {"error": "invalid_client", "error_description": f"AADSTS7000215: bad {CLIENT_SECRET}"}
    token_server.serve("/token", json_reply(refusal, status=400))
    async with CheckSmtpServer(tls="starttls", cert=cert) as server:
        [result] = await oauth_probe(server.port, token_source(token_server), ca_file)
    assert result.status is CheckStatus.CREDENTIALS, result.reason
    assert result.reason.startswith("auth: OAuth2 token: token refused (invalid_client: AADSTS7000215")
    assert CLIENT_SECRET not in result.reason
    assert server.bearer_tokens == []


async def test_unreachable_token_endpoint_is_unknown(cert: trustme.LeafCert, ca_file: str) -> None:
    """No token endpoint to ask says nothing about the mail provider: UNKNOWN."""
    with refusing_port() as port:
        config = OAuth2Config(token_url=f"http://{HOST}:{port}/token", client_id="a", client_secret="s")
        async with CheckSmtpServer(tls="starttls", cert=cert) as server:
            [result] = await oauth_probe(server.port, TokenSource(config), ca_file)
    assert result.status is CheckStatus.UNKNOWN, result.reason
    assert result.reason.startswith("auth: OAuth2 token: ")
