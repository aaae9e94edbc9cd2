"""A token endpoint that does not answer (the identity provider slow, or our way to it blocked)
within the check's own timeout: the SMTP and IMAP checks read unknown, as when it cannot be reached
(docs/monitoring-mail.md), not down. They read down, a trigger's vote for an outage of a mail
provider that was working (found by a review; with the defaults, a 10 s token timeout against a
10 s check, the check's timeout always fired first)."""

from __future__ import annotations

import trustme

from daemon.checks.imap import ImapCheck, ImapProbeSettings
from daemon.checks.oauth import TokenSource
from daemon.checks.smtp import SmtpCheck
from daemon.configbase import OAuth2Config
from daemon.core.model import CheckResult, CheckStatus
from tests.integration.smtp_check_server import HOST, CheckSmtpServer
from tests.integration.status_server import Reply, StatusServer
from tests.integration.test_imap_check import ImapStandIn
from tests.integration.test_smtp_check import settings

#: the check gives up first, as with the defaults (both 10 s), only sooner
CHECK_TIMEOUT_S = 1.5


def _hung(url: str) -> TokenSource:
    return TokenSource(OAuth2Config(token_url=url, client_id="a", client_secret="long-secret-value-123"))


async def _once(check: SmtpCheck | ImapCheck) -> CheckResult:
    try:
        return await check.run()
    finally:
        await check.aclose()


async def test_smtp_check_with_a_hung_token_endpoint_is_unknown(tls: tuple[trustme.LeafCert, str]) -> None:
    leaf, ca_file = tls
    async with StatusServer() as tokens, CheckSmtpServer(tls="starttls", cert=leaf) as server:
        tokens.serve("/token", Reply(delay_s=60))
        s = settings(server.port, starttls=True, ca_file=ca_file, username="probe@example.test")
        check = SmtpCheck("smtp", s, timeout_s=CHECK_TIMEOUT_S, token_source=_hung(f"{tokens.url}/token"))
        result = await _once(check)
    assert result.status is CheckStatus.UNKNOWN, result.reason
    assert "stage token" in result.reason and "token endpoint" in result.reason


async def test_imap_check_with_a_hung_token_endpoint_is_unknown(tls: tuple[trustme.LeafCert, str]) -> None:
    leaf, ca_file = tls
    async with StatusServer() as tokens, ImapStandIn(cert=leaf) as server:
        tokens.serve("/token", Reply(delay_s=60))
        s = ImapProbeSettings(HOST, "probe@example.test", server.port, "starttls", None, ca_file=ca_file)
        check = ImapCheck("imap", s, timeout_s=CHECK_TIMEOUT_S, token_source=_hung(f"{tokens.url}/token"))
        result = await _once(check)
    assert result.status is CheckStatus.UNKNOWN, result.reason
    assert "stage token" in result.reason
