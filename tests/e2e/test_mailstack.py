"""The SMTP, IMAP and round-trip checks against a real Postfix and Dovecot, including drills.

The stack comes from ``tests/e2e/mailstack.sh setup`` (``.ci/run`` calls it). Drills stop
Postfix or Dovecot (the mailbox side; Postfix's SASL instance stays up) and start them again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

from channels.email import SmtpSettings
from daemon.checks.imap import ImapCheck, ImapProbeSettings, Mailbox, Security
from daemon.checks.roundtrip import RoundtripCheck
from daemon.checks.smtp import SmtpCheck
from daemon.core.model import CheckResult, CheckStatus
from tests.e2e import MailStack

#: generous: several test runs may share this 2-core machine
TIMEOUT_S = 10.0


def smtp_check(stack: MailStack, *, password: str | None = None) -> SmtpCheck:
    settings = SmtpSettings(
        stack.host, stack.submission_port, username=stack.user, password=password or stack.password,
        ca_file=stack.ca_file, helo="e2e.backchannel.test",
    )  # fmt: skip
    return SmtpCheck("smtp", settings, timeout_s=TIMEOUT_S)


def imap_settings(
    stack: MailStack, *, password: str | None = None, security: Security = "starttls"
) -> ImapProbeSettings:
    port = stack.imaps_port if security == "tls" else stack.imap_port
    return ImapProbeSettings(
        stack.host, stack.user, port, security, password or stack.password, ca_file=stack.ca_file
    )


def roundtrip_check(stack: MailStack) -> RoundtripCheck:
    """A check with a name of its own, so concurrent test runs never take each other's canaries."""
    mailbox = Mailbox(imap_settings(stack), timeout_s=TIMEOUT_S, token_source=None)
    return RoundtripCheck(
        f"e2e-{uuid.uuid4().hex[:8]}", smtp_check(stack), mailbox,
        mail_from=stack.user, to=stack.user, timeout_s=2 * TIMEOUT_S,
    )  # fmt: skip


async def run_once(make: Callable[[], SmtpCheck | ImapCheck]) -> CheckResult:
    check = make()
    try:
        return await check.run()
    finally:
        await check.aclose()


async def run_until(run: Callable[[], Awaitable[CheckResult]], status: CheckStatus) -> CheckResult:
    """Runs until ``status`` comes back (daemons take a moment after start), within a deadline."""
    deadline = time.monotonic() + 60.0
    while (result := await run()).status is not status:
        assert time.monotonic() < deadline, f"still {result.status}: {result.reason}"
    return result


async def test_round_trip_succeeds_and_reports_latency(mail_stack: MailStack) -> None:
    """A canary sent through submission arrives over IMAP; the result carries its latency."""
    check = roundtrip_check(mail_stack)
    try:
        result = await check.run()
    finally:
        await check.aclose()
    assert result.status is CheckStatus.OK, result.reason
    assert result.reason.startswith("canary arrived after ")
    assert 0 < result.latency_s < 2 * TIMEOUT_S
    assert check.outstanding == []


async def test_smtp_and_imap_checks_are_ok(mail_stack: MailStack) -> None:
    """Submission with STARTTLS and AUTH, IMAP with STARTTLS and with TLS: all OK."""
    smtp = await run_once(lambda: smtp_check(mail_stack))
    assert smtp.status is CheckStatus.OK, smtp.reason
    assert smtp.reason == "ok: greeting, ehlo, starttls, ehlo after starttls, auth, noop, quit"
    securities: list[Security] = ["starttls", "tls"]
    for security in securities:
        settings = imap_settings(mail_stack, security=security)
        imap = await run_once(lambda s=settings: ImapCheck("imap", s, timeout_s=TIMEOUT_S))  # type: ignore[misc]
        assert imap.status is CheckStatus.OK, f"{security}: {imap.reason}"


async def test_wrong_password_is_credentials_for_smtp_and_imap(mail_stack: MailStack) -> None:
    """A refused password is CREDENTIALS on both protocols, never DOWN."""
    smtp = await run_once(lambda: smtp_check(mail_stack, password="not-the-password"))
    assert smtp.status is CheckStatus.CREDENTIALS, smtp.reason
    assert smtp.reason.startswith("auth: 535 ")
    settings = imap_settings(mail_stack, password="not-the-password")
    imap = await run_once(lambda: ImapCheck("imap", settings, timeout_s=TIMEOUT_S))
    assert imap.status is CheckStatus.CREDENTIALS, imap.reason
    assert "[AUTHENTICATIONFAILED]" in imap.reason
    assert "not-the-password" not in smtp.reason + imap.reason


async def test_postfix_stopped_makes_smtp_and_roundtrip_down(mail_drill: MailStack) -> None:
    """Without Postfix, the SMTP check and the round trip are DOWN: nothing can be sent."""
    check = roundtrip_check(mail_drill)
    try:
        mail_drill.ctl("stop", "postfix")
        smtp = await run_once(lambda: smtp_check(mail_drill))
        roundtrip = await check.run()
    finally:
        await check.aclose()
    assert smtp.status is CheckStatus.DOWN, smtp.reason
    assert smtp.reason.startswith("connect: connection refused")
    assert roundtrip.status is CheckStatus.DOWN, roundtrip.reason
    assert roundtrip.reason.startswith("send: connect: connection refused")


async def test_dovecot_stopped_makes_roundtrip_down_but_smtp_ok(mail_drill: MailStack) -> None:
    """Without the mailbox server, sending still works (SMTP OK) but the round trip is DOWN."""
    check = roundtrip_check(mail_drill)
    try:
        mail_drill.ctl("stop", "dovecot")
        smtp = await run_once(lambda: smtp_check(mail_drill))
        roundtrip = await check.run()
    finally:
        await check.aclose()
    assert smtp.status is CheckStatus.OK, smtp.reason
    assert roundtrip.status is CheckStatus.DOWN, roundtrip.reason
    assert roundtrip.reason.startswith("receive: connect: connection refused")
    assert len(check.outstanding) == 1


async def test_both_back_make_smtp_and_roundtrip_ok_again(mail_drill: MailStack) -> None:
    """After both daemons come back, both checks are OK and the canaries sent meanwhile are gone."""
    check = roundtrip_check(mail_drill)
    try:
        mail_drill.ctl("stop", "dovecot")
        assert (await check.run()).status is CheckStatus.DOWN
        mail_drill.ctl("stop", "postfix")
        assert (await check.run()).status is CheckStatus.DOWN
        mail_drill.ctl("start", "all")
        smtp = await run_until(lambda: run_once(lambda: smtp_check(mail_drill)), CheckStatus.OK)
        roundtrip = await run_until(check.run, CheckStatus.OK)
    finally:
        await check.aclose()
    assert smtp.reason.endswith("auth, noop, quit")
    assert roundtrip.reason.startswith("canary arrived after ")
    assert check.outstanding == []
