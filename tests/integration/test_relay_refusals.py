"""Relayed smart-host mail whose provider refuses recipients: follow-ups and reports to the sender.

The real daemon in the test's loop (:func:`tests.support.running`): its SMTP intake on 127.0.0.1
takes a message, the outbox (SQLite in ``tmp_path``) commits it, the email channel relays it to
aiosmtpd standing in for the provider, which refuses chosen recipients with chosen replies.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from channels.email import EmailChannel, SmtpSettings
from daemon.app import Daemon
from daemon.clock import SystemClock
from daemon.core.model import DeliveryState, Mode, Notification, Plan, ProviderState, Severity
from daemon.delivering import Deliverer
from daemon.dispatch_policy import ChannelPolicy
from daemon.refusals import Bounces
from daemon.rendering import Renderer
from daemon.send_slots import SendSlots
from daemon.store.base import Store
from daemon.store.sqlite import SqliteStore
from daemon.store.values import NewNotification, NotificationView, Outcome
from tests.servers import ReceivedMail, SmtpServer, WebhookReceiver
from tests.support import config_template, running, until

SENDER = "app@example.com"
BODY_MARKER = "NIGHTLY-JOB-BODY-7f3a"
HOOK_SECRET = "whsec_cmVsYXktcmVmdXNhbHMtaG9vay1zZWNyZXQ="
CONFIG = config_template("""\
intake:
  smtp: {{listen: "127.0.0.1:0", hostname: relay.test, allowed_networks: [127.0.0.0/8]}}
routes:
  - {{name: all, match: {{}}, healthy: [email], outage: defer}}
dispatch: {{retry: {{initial: 50ms, max: 200ms, max_attempts: 3}}}}
""")


@dataclass
class Relay:
    daemon: Daemon
    provider: SmtpServer

    async def send(self, *recipients: str, sender: str = SENDER) -> tuple[str, bytes]:
        """One message through the smart host: its notification id and its bytes."""
        assert self.daemon.smtp is not None
        raw = _message(recipients).as_bytes()
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1", port=self.daemon.smtp.port, start_tls=False
        ) as client:
            utf8 = not (sender + "".join(recipients)).isascii()
            options = ["SMTPUTF8"] if utf8 else []  # RFC 6531, which the smart host offers
            _, reply = await client.sendmail(sender, list(recipients), raw, mail_options=options)
        return reply.split()[-1], raw

    async def views(self) -> list[NotificationView]:
        return await self.daemon.store.recent(100)

    async def settled(self, *predicates: Callable[[NotificationView], bool]) -> list[NotificationView]:
        """The outbox once each predicate holds for some notification and nothing is left pending."""

        async def check() -> list[NotificationView] | None:
            views = await self.views()
            done = all(any(p(v) for v in views) for p in predicates)
            return views if done and all(v.status in ("delivered", "failed") for v in views) else None

        result: list[NotificationView] = await until(check)
        return result

    def reports(self) -> list[ReceivedMail]:
        """What the provider received from the null sender: the reports."""
        return [m for m in self.provider.messages if m.mail_from == "<>"]

    def got(self, recipient: str) -> list[ReceivedMail]:
        return [m for m in self.provider.messages if recipient in m.rcpt_tos and m.mail_from != "<>"]


def _message(recipients: tuple[str, ...]) -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = SENDER
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = "Nightly job failed"
    msg["Message-ID"] = f"<{abs(hash(recipients))}@app.example.com>"
    msg.set_content(f"{BODY_MARKER}\nThe nightly job failed.\n")
    return msg


def _parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _status_blocks(report: EmailMessage) -> list[EmailMessage]:
    _, status, _ = report.iter_parts()
    blocks: list[EmailMessage] = status.get_payload()
    return blocks


def _is(status: str, **labels: str) -> Callable[[NotificationView], bool]:
    def holds(view: NotificationView) -> bool:
        return view.status == status and all(view.notification.labels.get(k) == v for k, v in labels.items())

    return holds


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    with SmtpServer() as provider:
        text = CONFIG.format(store=tmp_path / "outbox.db", api_port=0, smtp_port=provider.port)
        async with running(text, {"TOKEN": "relay-refusals-token-0123456789"}) as daemon:
            yield Relay(daemon, provider)


async def test_a_recipient_refused_for_now_gets_the_message_later_and_the_others_once(relay: Relay) -> None:
    """450 to one recipient (in the send and its second transaction): the other gets the message
    once; a follow-up to the refused one alone delivers it once the server takes it."""
    relay.provider.refuse("busy@example.com", code=450, text="4.2.1 Mailbox busy", times=2)
    original, raw = await relay.send("ok@example.com", "busy@example.com")
    views = await relay.settled(_is("delivered", relay_of=original))
    assert [m.data for m in relay.got("ok@example.com")] == [raw]
    [later] = relay.got("busy@example.com")
    assert (later.mail_from, later.rcpt_tos, later.data) == (SENDER, ("busy@example.com",), raw)
    assert {v.notification.id: v.status for v in views}[original] == "delivered"
    assert relay.reports() == []


async def test_recipients_past_the_servers_limit_all_get_it_in_several_transactions(relay: Relay) -> None:
    """452 4.5.3 past two recipients per message: five recipients, three transactions, each once."""
    relay.provider.limit_recipients(2)
    recipients = tuple(f"r{i}@example.com" for i in range(5))
    await relay.send(*recipients)
    mails = await relay.provider.wait_for_async(3)
    await relay.settled()
    assert len(relay.provider.messages) == 3
    assert sorted(r for m in mails for r in m.rcpt_tos) == list(recipients)


async def test_a_recipient_refused_for_good_gets_its_sender_a_report(relay: Relay) -> None:
    """550 to one recipient: the other gets the message; the sender gets an RFC 3464 report from
    <> naming the recipient and the reply, with the original's header and not its body."""
    relay.provider.refuse("gone@example.com")
    original, _ = await relay.send("ok@example.com", "gone@example.com")
    await relay.settled(_is("delivered", bounce_of=original))
    assert len(relay.got("ok@example.com")) == 1
    [sent] = relay.reports()
    assert sent.rcpt_tos == (SENDER,)
    report = _parse(sent.data)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    per_message, per_recipient = _status_blocks(report)
    assert per_message["Reporting-MTA"] == "dns; relay.test"
    assert per_recipient["Final-Recipient"] == "rfc822; gone@example.com"
    assert (per_recipient["Action"], per_recipient["Status"]) == ("failed", "5.1.1")
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user"
    assert "Subject: Nightly job failed" in list(report.iter_parts())[2].get_content()
    assert BODY_MARKER.encode() not in sent.data
    assert report["From"].addresses[0].addr_spec == "MAILER-DAEMON@relay.test"


async def test_a_refusal_that_is_not_utf8_is_reported_once(relay: Relay) -> None:
    """A provider answering in Latin-1 (550 5.1.1 Empf\xe4nger unbekannt): the report quotes it
    as text, and the message is relayed once and settled, not sent again after every lease."""
    relay.provider.refuse("gone@example.com", text=b"5.1.1 Empf\xe4nger unbekannt")
    original, _ = await relay.send("ok@example.com", "gone@example.com")
    views = await relay.settled(_is("delivered", bounce_of=original))
    assert {v.notification.id: v.status for v in views}[original] == "delivered"
    assert len(relay.got("ok@example.com")) == 1
    [sent] = relay.reports()
    _, per_recipient = _status_blocks(_parse(sent.data))
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 Empfänger unbekannt"


async def test_every_recipient_refused_some_for_now_reports_the_others_at_once(relay: Relay) -> None:
    """550 to one recipient and 452 4.2.2 to the other, none taken: the sender hears of the first
    at once (not after the retries), and a follow-up brings the message to the second alone."""
    relay.provider.refuse("gone@example.com")
    relay.provider.refuse("full@example.com", code=452, text="4.2.2 Mailbox full", times=2)
    original, raw = await relay.send("gone@example.com", "full@example.com")
    views = await relay.settled(_is("delivered", relay_of=original), _is("delivered", bounce_of=original))
    assert {v.notification.id: v.status for v in views}[original] == "failed"
    [sent] = relay.reports()
    [block] = _status_blocks(_parse(sent.data))[1:]
    assert (block["Final-Recipient"], block["Status"]) == ("rfc822; gone@example.com", "5.1.1")
    [later] = relay.got("full@example.com")
    assert (later.rcpt_tos, later.data) == (("full@example.com",), raw)


async def test_a_message_the_provider_cannot_take_gets_a_report_found_here(relay: Relay) -> None:
    """A recipient beyond ASCII and a provider without SMTPUTF8: no server replied, but the message
    fails for good all the same, so its sender is told (status 5.6.7, diagnostic x-backchannel)."""
    relay.provider.without_smtputf8()
    original, _ = await relay.send("jürgen@example.com")
    await relay.settled(_is("failed"), _is("delivered", bounce_of=original))
    [sent] = relay.reports()
    assert sent.rcpt_tos == (SENDER,)
    [block] = _status_blocks(_parse(sent.data))[1:]
    assert block["Status"] == "5.6.7"
    assert block["Diagnostic-Code"].startswith(
        "x-backchannel; 5.6.7 SMTPUTF8 is required, but was not offered"
    )


async def test_no_report_while_a_further_email_step_relays_it(tmp_path: Path) -> None:
    """healthy: [email, other]: the provider refuses the message for good, the second email channel
    relays it; the sender is not told it was undelivered, nobody gets a follow-up."""
    rest = """\
  other: {{type: email, smtp: {{host: 127.0.0.1, port: OTHER_PORT, starttls: false}}}}
intake:
  smtp: {{listen: "127.0.0.1:0", hostname: relay.test, allowed_networks: [127.0.0.0/8]}}
routes:
  - {{name: all, match: {{}}, healthy: [email, other], outage: defer}}
"""
    with SmtpServer() as provider, SmtpServer() as other:
        provider.refuse("busy@example.com", code=450, text="4.2.1 Mailbox busy")
        provider.refuse("gone@example.com", code=550, text="5.1.1 No such user")
        template = config_template(rest.replace("OTHER_PORT", str(other.port)))
        text = template.format(store=tmp_path / "outbox.db", api_port=0, smtp_port=provider.port)
        async with running(text, {"TOKEN": "relay-refusals-token-0123456789"}) as daemon:
            relay = Relay(daemon, provider)
            original, raw = await relay.send("busy@example.com", "gone@example.com")
            views = await relay.settled(_is("delivered"))
    assert [v.notification.id for v in views] == [original]
    assert [(m.rcpt_tos, m.data) for m in other.messages] == [(("busy@example.com", "gone@example.com"), raw)]
    assert relay.reports() == [] and relay.got("busy@example.com") == []


async def test_a_report_although_a_further_step_is_not_email(tmp_path: Path) -> None:
    """healthy: [email, hook]: the webhook gets the message as text, but the mailbox never got it:
    its sender is told."""
    with SmtpServer() as provider, WebhookReceiver() as hook:
        rest = f"""\
  hook: {{{{type: webhook, url: "{hook.url}", secret: "{HOOK_SECRET}", allow_private: true}}}}
intake:
  smtp: {{{{listen: "127.0.0.1:0", hostname: relay.test, allowed_networks: [127.0.0.0/8]}}}}
routes:
  - {{{{name: all, match: {{{{}}}}, healthy: [email, hook], outage: defer}}}}
"""
        provider.refuse("gone@example.com", code=550, text="5.1.1 No such user")
        text = config_template(rest).format(store=tmp_path / "outbox.db", api_port=0, smtp_port=provider.port)
        async with running(text, {"TOKEN": "relay-refusals-token-0123456789"}) as daemon:
            relay = Relay(daemon, provider)
            original, _ = await relay.send("gone@example.com")
            views = await relay.settled(_is("delivered", bounce_of=original))
            assert len(hook.requests) == 1
    (report,) = relay.reports()
    assert report.rcpt_tos == (SENDER,)
    assert {v.notification.id: v.status for v in views}[original] == "delivered"


async def test_a_message_refused_at_data_gets_one_report_for_all(relay: Relay) -> None:
    """554 at the end of DATA: the notification fails and its sender gets one report naming both."""
    relay.provider.refuse_content(BODY_MARKER.encode(), 554, "5.7.1 Message rejected as spam")
    original, _ = await relay.send("a@example.com", "b@example.com")
    views = await relay.settled(_is("failed"), _is("delivered", bounce_of=original))
    [sent] = relay.reports()
    blocks = _status_blocks(_parse(sent.data))[1:]
    assert [b["Final-Recipient"] for b in blocks] == ["rfc822; a@example.com", "rfc822; b@example.com"]
    assert {b["Status"] for b in blocks} == {"5.7.1"}
    assert len(views) == 2


async def test_the_null_sender_never_gets_a_report(relay: Relay) -> None:
    """A message from <> refused for good: no report is ever made (the outcome is recorded after
    any would have been committed)."""
    relay.provider.refuse("gone@example.com")
    original, _ = await relay.send("ok@example.com", "gone@example.com", sender="")
    views = await relay.settled(lambda v: v.notification.id == original)
    assert [v.notification.id for v in views] == [original]
    assert [m.rcpt_tos for m in relay.provider.messages] == [("ok@example.com",)]


async def test_a_report_that_fails_is_not_reported_on(relay: Relay) -> None:
    """The sender's own address refused for good: the report fails, and no report of it is made."""
    relay.provider.refuse("gone@example.com", SENDER)
    original, _ = await relay.send("ok@example.com", "gone@example.com")
    views = await relay.settled(_is("failed", bounce_of=original))
    assert len(views) == 2
    assert relay.reports() == []


class _Crash(Exception):
    """The process dies between committing what a send calls for and recording its outcome."""


class _CrashingStore(SqliteStore):
    """Records nothing the first time: the deliverer dies there, as in a crash."""

    crashes = 1

    async def record(self, outcomes: Sequence[Outcome], now: datetime) -> None:
        if self.crashes:
            self.crashes -= 1
            raise _Crash
        await super().record(outcomes, now)


def _deliverer(store: Store, provider: SmtpServer) -> Deliverer:
    smtp = SmtpSettings("127.0.0.1", provider.port, starttls=False, timeout_s=5.0)
    channels = {"email": EmailChannel("email", smtp, mail_from="bc@test.example")}
    policies = {"email": ChannelPolicy(primary=True)}

    async def no_fault(reason: str) -> None:
        raise AssertionError(f"no provider fault expected: {reason}")

    return Deliverer(
        store,
        channels,
        policies,
        clock=SystemClock(),
        mode=lambda: "healthy",
        slots=SendSlots(channels, policies, lambda: None),
        renderer=Renderer(lambda: ProviderState.HEALTHY),
        on_primary_failure=no_fault,
        on_stale_mode=lambda: None,
        poll_s=0.05,
        rand=lambda: 0.5,
        bounces=Bounces(reporter="relay.test"),
    )


async def test_follow_up_and_report_are_committed_before_the_outcome_and_only_once(tmp_path: Path) -> None:
    """A crash after the send, before its outcome: the follow-up and the report are in the outbox
    already, the original still claimed; sent again after the restart, the original makes no
    second follow-up nor report (at least once: the recipient who took it gets it again)."""
    store, now = _CrashingStore(tmp_path / "outbox.db"), datetime.now(UTC)
    await store.open()
    try:
        with SmtpServer() as provider:
            provider.refuse("busy@example.com", code=452, text="4.2.2 Mailbox full")
            provider.refuse("gone@example.com")
            raw = _message(("ok@example.com", "busy@example.com", "gone@example.com")).as_bytes()
            original = Notification(
                id="01CRASHTEST", idempotency_key="smtp:crash", created_at=now, severity=Severity.INFO,
                subject="Nightly job failed", source="smtp", mail_from=SENDER, raw=raw,
                recipients=("ok@example.com", "busy@example.com", "gone@example.com"),
            )  # fmt: skip
            plans: dict[Mode, Plan] = {m: Plan("all", m, steps=("email",)) for m in ("healthy", "outage")}
            await store.accept([NewNotification(original, plans)], now)
            deliverer = _deliverer(store, provider)
            [claimed] = await store.claim("email", 1, now, now + timedelta(minutes=5))
            with pytest.raises(_Crash):
                await deliverer.deliver("email", claimed)
            before = {v.notification.id: v for v in await store.recent(10)}
            assert before["01CRASHTEST"].deliveries[0].state == DeliveryState.IN_FLIGHT
            made = sorted(
                v.notification.source for v in before.values() if v.notification.id != "01CRASHTEST"
            )
            assert made == ["bounce", "smtp"]

            await store.release_claims(datetime.now(UTC))  # what the next start does
            [again] = await store.claim(
                "email", 1, datetime.now(UTC), datetime.now(UTC) + timedelta(minutes=5)
            )
            assert again.notification.id == "01CRASHTEST"
            await deliverer.deliver("email", again)
            after = {v.notification.id: v for v in await store.recent(10)}
            assert after.keys() == before.keys()
            assert after["01CRASHTEST"].status == "delivered"
            assert len([m for m in provider.messages if "ok@example.com" in m.rcpt_tos]) == 2
    finally:
        await store.close()
