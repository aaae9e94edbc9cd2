"""The round-trip check against the real Postfix + Dovecot stack (``tests/e2e/mailstack.sh``).

A canary's journey cannot be faked honestly, so these tests need the stack: they skip naming
what is missing, and fail under ``CI=true``. Each test's check has a name of its own, so test
runs sharing the stack never take each other's canaries for stale ones.
"""

from __future__ import annotations

import imaplib
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from channels.email import SmtpSettings
from daemon.checks.base import Check
from daemon.checks.imap import ImapProbeSettings, Mailbox
from daemon.checks.roundtrip import HEADER, SUBJECT_TAG, Canary, RoundtripCheck
from daemon.checks.smtp import SmtpCheck
from daemon.core.model import CheckStatus
from tests.e2e import MailStack, require_stack, stack_lock
from tests.integration.smtp_check_server import HOST, CheckSmtpServer, refusing_port

TIMEOUT_S = 10.0


@pytest.fixture
def stack() -> Iterator[MailStack]:
    found = require_stack()
    with stack_lock(exclusive=False):
        yield found


def make_check(
    stack: MailStack,
    *,
    smtp_port: int | None = None,
    smtp_password: str | None = None,
    imap_password: str | None = None,
    timeout_s: float = 2 * TIMEOUT_S,
    monotonic: Callable[[], float] = time.monotonic,
    warn_after_s: float = 95.0,
    fail_after_s: float = 300.0,
    name: str | None = None,
) -> RoundtripCheck:
    on_stack = smtp_port is None
    smtp = SmtpSettings(
        HOST, smtp_port or stack.submission_port, starttls=on_stack,
        username=stack.user if on_stack else None,
        password=(smtp_password or stack.password) if on_stack else None,
        ca_file=stack.ca_file, helo="it.backchannel.test",
    )  # fmt: skip
    imap = ImapProbeSettings(
        HOST, stack.user, stack.imap_port, "starttls", imap_password or stack.password, ca_file=stack.ca_file
    )
    return RoundtripCheck(
        name or f"it-{uuid.uuid4().hex[:8]}", SmtpCheck("smtp", smtp, timeout_s=timeout_s / 2),
        Mailbox(imap, timeout_s=timeout_s, token_source=None),
        mail_from=stack.user, to=stack.user, timeout_s=timeout_s, monotonic=monotonic,
        warn_after_s=warn_after_s, fail_after_s=fail_after_s,
    )  # fmt: skip


@pytest.fixture
async def checks() -> AsyncIterator[list[RoundtripCheck]]:
    """Checks registered here are closed after the test."""
    made: list[RoundtripCheck] = []
    yield made
    for check in made:
        await check.aclose()


def imap_session(stack: MailStack) -> imaplib.IMAP4:
    imap = imaplib.IMAP4(HOST, stack.imap_port, timeout=TIMEOUT_S)
    imap.starttls(ssl.create_default_context(cafile=stack.ca_file))
    imap.login(stack.user, stack.password)
    imap.select("INBOX")
    return imap


def plant(stack: MailStack, tag: str, token: str, sent_at: datetime | None = None) -> None:
    """A canary as a crashed run (or another check, or another node) would leave it."""
    date = "" if sent_at is None else f"Date: {format_datetime(sent_at)}\r\n"
    message = (
        f"From: {stack.user}\r\nTo: {stack.user}\r\nSubject: {SUBJECT_TAG} {tag} {token}\r\n"
        f"{HEADER}: {tag} {token}\r\n{date}\r\nleft behind\r\n"
    )
    imap = imap_session(stack)
    try:
        assert imap.append("INBOX", None, None, message.encode())[0] == "OK"
    finally:
        imap.logout()


def canaries_of(stack: MailStack, tag: str, *, delete: bool = False) -> int:
    imap = imap_session(stack)
    try:
        _, [found] = imap.uid("SEARCH", "SUBJECT", f'"{SUBJECT_TAG} {tag} "')
        uids = found.split()
        if delete and uids:
            imap.uid("STORE", b",".join(uids).decode(), "+FLAGS.SILENT", r"(\Deleted)")
            imap.expunge()
        return len(uids)
    finally:
        imap.logout()


def test_roundtrip_check_is_a_check() -> None:
    """RoundtripCheck satisfies the Check protocol the scheduler runs."""
    smtp = SmtpCheck("smtp", SmtpSettings(HOST), timeout_s=1.0)
    mailbox = Mailbox(ImapProbeSettings(HOST, "u"), timeout_s=1.0, token_source=None)
    assert isinstance(RoundtripCheck("rt", smtp, mailbox, mail_from="a@b", to="a@b", timeout_s=2.0), Check)


async def test_canary_arrives_with_latency_and_is_deleted(
    stack: MailStack, checks: list[RoundtripCheck]
) -> None:
    """A canary goes out, arrives, is measured and deleted; the next run sends a new one."""
    check = make_check(stack)
    checks.append(check)
    first, second = await check.run(), await check.run()
    assert (first.status, second.status) == (CheckStatus.OK, CheckStatus.OK), first.reason
    assert first.reason.startswith("canary arrived after ")
    assert 0 < first.latency_s < TIMEOUT_S
    assert check.outstanding == []
    assert canaries_of(stack, check.tag) == 0


async def test_canary_of_a_check_named_in_non_ascii_arrives_and_is_deleted(
    stack: MailStack, checks: list[RoundtripCheck]
) -> None:
    """A check's name outside ASCII goes into the canary's headers as RFC 2047 encoded words; they
    are read decoded. Read as they were, the canary was another check's: never found (UNKNOWN,
    then DOWN while mail flowed) and never deleted, a new one piling up each run."""
    unique = uuid.uuid4().hex[:8]
    check = make_check(stack, name=f"it-prüfung-{unique}")
    checks.append(check)
    result = await check.run()
    assert result.status is CheckStatus.OK, result.reason
    assert check.outstanding == []
    imap = imap_session(stack)
    try:
        assert imap.uid("SEARCH", "SUBJECT", unique)[1] == [b""]
    finally:
        imap.logout()


async def test_latency_past_warn_after_is_degraded(stack: MailStack, checks: list[RoundtripCheck]) -> None:
    """A canary slower than warn_after is DEGRADED."""
    check = make_check(stack, warn_after_s=0.0001, fail_after_s=1000.0)
    checks.append(check)
    result = await check.run()
    assert result.status is CheckStatus.DEGRADED, result.reason


async def test_latency_past_fail_after_is_down(stack: MailStack, checks: list[RoundtripCheck]) -> None:
    """A canary slower than fail_after is DOWN."""
    check = make_check(stack, warn_after_s=0.0001, fail_after_s=0.0002)
    checks.append(check)
    result = await check.run()
    assert result.status is CheckStatus.DOWN, result.reason
    assert result.reason.startswith("canary arrived after ")


async def test_canary_that_never_arrives_is_unknown_then_down(
    stack: MailStack, checks: list[RoundtripCheck]
) -> None:
    """In flight is UNKNOWN, past warn_after too (nothing arrived: DEGRADED counts as working, and
    confirmed a recovery no mail had, found by a review); past fail_after DOWN (a clock jumps ahead)."""
    skew = [0.0]
    async with CheckSmtpServer() as sink:  # accepts the canary and delivers it nowhere
        check = make_check(
            stack, smtp_port=sink.port, timeout_s=2.0, monotonic=lambda: time.monotonic() + skew[0]
        )
        checks.append(check)
        in_flight = await check.run()
        skew[0] = 100.0
        late = await check.run()
        skew[0] = 400.0
        lost = await check.run()
    assert in_flight.status is CheckStatus.UNKNOWN, in_flight.reason
    assert in_flight.reason.startswith("1 canary(ies) not arrived, the oldest sent ")
    assert late.status is CheckStatus.UNKNOWN, late.reason
    assert lost.status is CheckStatus.DOWN, lost.reason
    assert lost.reason.startswith("3 canary(ies) not arrived, the oldest sent 40")


async def test_arrival_gives_up_older_canaries(stack: MailStack, checks: list[RoundtripCheck]) -> None:
    """When a canary arrives, older ones still missing are given up as lost, and said so."""
    check = make_check(stack)
    checks.append(check)
    check.outstanding = [Canary(uuid.uuid4().hex, time.monotonic() - 30.0)]
    result = await check.run()
    assert result.status is CheckStatus.OK, result.reason
    assert result.reason.endswith("; 1 older canary(ies) never arrived")
    assert check.outstanding == []


async def test_stale_canaries_are_deleted_and_others_left(
    stack: MailStack, checks: list[RoundtripCheck]
) -> None:
    """This check's canaries from a crashed run are deleted; another check's are not its business."""
    check = make_check(stack)
    checks.append(check)
    other = f"other-{uuid.uuid4().hex[:8]}"
    plant(stack, check.tag, uuid.uuid4().hex)
    plant(stack, other, uuid.uuid4().hex)
    try:
        result = await check.run()
        assert result.status is CheckStatus.OK, result.reason
        assert result.reason.endswith("; 1 stale canary(ies) deleted")
        assert canaries_of(stack, check.tag) == 0
        assert canaries_of(stack, other) == 1
    finally:
        canaries_of(stack, other, delete=True)


async def test_another_nodes_canary_in_flight_is_left_for_it(
    stack: MailStack, checks: list[RoundtripCheck]
) -> None:
    """With high availability every node runs the check against one mailbox: a canary of this
    check that this node did not send and that is younger than fail_after is another node's,
    left for it (deleted as stale, that node's check read DOWN while mail flowed); one older than
    twice fail_after (the nodes' clocks may disagree) is stale and goes."""
    check = make_check(stack)
    checks.append(check)
    now = datetime.now(UTC)
    plant(stack, check.tag, "a" * 32, now - timedelta(seconds=400))
    plant(stack, check.tag, "b" * 32, now - timedelta(seconds=601))
    try:
        result = await check.run()
        assert result.status is CheckStatus.OK, result.reason
        assert result.reason.endswith("; 1 stale canary(ies) deleted")
        assert canaries_of(stack, check.tag) == 1
    finally:
        canaries_of(stack, check.tag, delete=True)


async def test_send_failure_is_down_and_sends_nothing(stack: MailStack, checks: list[RoundtripCheck]) -> None:
    """A provider SMTP that refuses connections makes the round trip DOWN at once."""
    with refusing_port() as port:
        check = make_check(stack, smtp_port=port)
        checks.append(check)
        result = await check.run()
    assert result.status is CheckStatus.DOWN
    assert result.reason == f"send: connect: connection refused by {HOST}:{port}"
    assert check.outstanding == []


async def test_a_refused_recipient_is_said_once() -> None:
    """The provider refusing the canary's recipient reads 'send: 550 ...', not 'send: send: 550 ...'
    (the session names its own stage, which is called send too). Needs no mailbox: nothing is sent."""
    async with CheckSmtpServer() as server:
        server.script.rcpt = "550 5.1.1 no such user"
        smtp = SmtpCheck("smtp", SmtpSettings(HOST, server.port, starttls=False), timeout_s=TIMEOUT_S)
        imap = ImapProbeSettings(HOST, "canary@test.example", 1, "starttls", "unused")
        check = RoundtripCheck(
            "it-rcpt", smtp, Mailbox(imap, timeout_s=TIMEOUT_S, token_source=None),
            mail_from="bc@test.example", to="canary@test.example", timeout_s=2 * TIMEOUT_S,
        )  # fmt: skip
        try:
            result = await check.run()
        finally:
            await check.aclose()
    assert result.status is CheckStatus.DOWN
    assert result.reason.startswith("send: ") and "send: send:" not in result.reason, result.reason
    assert "550 5.1.1 no such user" in result.reason


async def test_refused_credentials_are_credentials(stack: MailStack, checks: list[RoundtripCheck]) -> None:
    """A refused SMTP password or IMAP password is CREDENTIALS, on the side that refused it."""
    smtp_refused = make_check(stack, smtp_password="wrong-smtp-pw")
    imap_refused = make_check(stack, imap_password="wrong-imap-pw")
    checks.extend([smtp_refused, imap_refused])
    sending, receiving = await smtp_refused.run(), await imap_refused.run()
    assert sending.status is CheckStatus.CREDENTIALS, sending.reason
    assert sending.reason.startswith("send: auth: 535 ")
    assert receiving.status is CheckStatus.CREDENTIALS, receiving.reason
    assert receiving.reason.startswith("receive: auth: [AUTHENTICATIONFAILED]")
    assert "wrong-" not in sending.reason + receiving.reason
    canaries_of(stack, imap_refused.tag, delete=True)
