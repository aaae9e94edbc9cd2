"""Critical smart-host mail sent to a webhook during an outage reaches its mailboxes after recovery.

The real daemon in the test's loop (:func:`tests.support.running`): its SMTP intake on 127.0.0.1
takes the messages, the outbox (SQLite in ``tmp_path``) commits them, the webhook channel posts
the critical ones to a local receiver during the outage (the operator override), and after the
recovery the email channel relays them to aiosmtpd standing in for the provider.
"""

from __future__ import annotations

import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from daemon.app import Daemon
from daemon.core.model import ProviderState
from daemon.refusals import RELAY_OF_LABEL
from daemon.store.values import NotificationView
from tests.servers import ScriptedResponse, SmtpServer, WebhookReceiver
from tests.support import config_template, running, until

SENDER = "app@example.com"
HOOK_SECRET = "whsec_bWFpbC1hZnRlci1vdXRhZ2UtaG9vay1zZWNyZXQ="
REST = f"""\
  hook: {{{{type: webhook, url: "HOOK_URL", secret: "{HOOK_SECRET}", allow_private: true}}}}
intake:
  smtp:
    listen: "127.0.0.1:0"
    hostname: relay.test
    allowed_networks: [127.0.0.0/8]
    rules: [{{{{importance: [high], severity: critical}}}}]
routes:
  - {{{{name: pager, match: {{{{matchers: ["recipient=pager@example.com"]}}}}, healthy: [email],
      outage: [hook], catch_up: false}}}}
  - {{{{name: hook-only, match: {{{{matchers: ["recipient=robot@example.com"]}}}}, healthy: [hook],
      outage: [hook]}}}}
  - {{{{name: critical, match: {{{{severity: [critical]}}}}, healthy: [email], outage: [hook]}}}}
  - {{{{name: rest, match: {{{{}}}}, healthy: [email], outage: defer}}}}
dispatch: {{{{retry: {{{{initial: 50ms, max: 200ms, max_attempts: 3}}}}}}}}
"""


@dataclass
class World:
    daemon: Daemon
    provider: SmtpServer
    hook: WebhookReceiver

    async def send(self, subject: str, *recipients: str, urgent: bool = True) -> tuple[str, bytes]:
        """One message through the smart host: its notification id and its bytes."""
        assert self.daemon.smtp is not None
        raw = _message(subject, recipients, urgent).as_bytes()
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=self.daemon.smtp.port, start_tls=False) as c:
            _, reply = await c.sendmail(SENDER, list(recipients), raw)
        return reply.split()[-1], raw

    async def outage(self) -> None:
        await self.daemon.monitor.force(ProviderState.OUTAGE, "test")

    async def recover(self) -> None:
        await self.daemon.monitor.release()

    async def copies_of(self, notification_id: str) -> list[NotificationView]:
        views = await self.daemon.store.recent(100)
        return [v for v in views if v.notification.labels.get(RELAY_OF_LABEL) == notification_id]


def _message(subject: str, recipients: tuple[str, ...], urgent: bool) -> EmailMessage:
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = SENDER
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{abs(hash((subject, recipients)))}@app.example.com>"
    if urgent:
        msg["Importance"] = "high"
    msg.set_content(f"{subject}: the nightly job failed.\n")
    msg.add_attachment(
        b"\x00log\xff" * 50, maintype="application", subtype="octet-stream", filename="job.log"
    )
    return msg


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    with SmtpServer() as provider, WebhookReceiver() as hook:
        template = config_template(REST.replace("HOOK_URL", hook.url))
        text = template.format(store=tmp_path / "outbox.db", api_port=0, smtp_port=provider.port)
        async with running(text, {"TOKEN": "mail-after-outage-token-0123456789"}) as daemon:
            yield World(daemon, provider, hook)


async def _is(world: World, notification_id: str, status: str) -> bool:
    view = await world.daemon.store.notification(notification_id)
    return view is not None and view.status == status


async def test_critical_mail_sent_to_chat_in_an_outage_is_relayed_by_email_after_it(world: World) -> None:
    """The webhook has it as text during the outage; after the recovery the provider gets the
    message itself, byte for byte, from its envelope sender to every recipient, once."""
    await world.outage()
    original, raw = await world.send("database down", "oncall@example.com", "dba@example.com")
    await world.hook.wait_for_async(1)
    await until(lambda: _is(world, original, "delivered"))
    assert world.provider.messages == []

    await world.recover()
    (relayed,) = await world.provider.wait_for_async(1, timeout_s=20)
    assert relayed.data == raw
    assert relayed.mail_from == SENDER
    assert relayed.rcpt_tos == ("oncall@example.com", "dba@example.com")
    (copy,) = await world.copies_of(original)
    assert copy.route == "after-outage"
    await until(lambda: _is(world, copy.notification.id, "delivered"))

    # the catch-up run again (a restart, a new leader) relays nothing a second time
    assert await world.daemon.catchup.run() == 0
    assert len(await world.copies_of(original)) == 1
    assert len(world.provider.messages) == 1
    relayed_total = "backchannel_mail_relayed_after_outage_total"
    assert world.daemon.metrics.registry.get_sample_value(relayed_total) == 1


@pytest.mark.parametrize(
    "recipient",
    [
        # catch_up: false (the pager route): reached on chat, its mail is not sent again
        pytest.param("pager@example.com", id="catch-up-false"),
        # a route that sends its mail to the webhook in either mode: the outage changed nothing
        # for it, so the recovery does not email it (as it never would have, the provider up)
        pytest.param("robot@example.com", id="never-emailed"),
    ],
)
async def test_mail_of_a_route_that_wants_no_mail_after_the_outage_is_not_relayed(
    world: World, recipient: str
) -> None:
    await world.outage()
    left, _ = await world.send("page", recipient)
    critical, raw = await world.send("database down", "oncall@example.com")
    await world.hook.wait_for_async(2)
    await until(lambda: _all_delivered(world, left, critical))

    await world.recover()
    (relayed,) = await world.provider.wait_for_async(1, timeout_s=20)
    assert relayed.data == raw
    await world.daemon.catchup.run()  # whatever the first run did, it is done now too
    assert await world.copies_of(left) == []
    assert [m.rcpt_tos for m in world.provider.messages] == [("oncall@example.com",)]


async def test_held_mail_is_relayed_once_not_twice(world: World) -> None:
    """Mail the outage held (not critical) goes out by its own plan at the recovery; it never went
    to chat, so no copy of it is made."""
    await world.outage()
    held, raw = await world.send("weekly report", "finance@example.com", urgent=False)
    await until(lambda: _is(world, held, "held"))

    await world.recover()
    (relayed,) = await world.provider.wait_for_async(1, timeout_s=20)
    assert relayed.data == raw
    await world.daemon.catchup.run()
    assert await world.copies_of(held) == []
    assert len(world.provider.messages) == 1


async def _all_delivered(world: World, *ids: str) -> bool:
    return all([await _is(world, i, "delivered") for i in ids])


async def test_a_message_still_being_sent_at_the_recovery_is_relayed_by_the_later_run(world: World) -> None:
    """The webhook takes a second to answer; the catch-up run at the recovery (here without waiting
    for sends in flight) finds the message unsettled; the run a little later relays it, once."""
    catchup = world.daemon.catchup
    catchup._settle_s, catchup._late_s = 0.0, 4.0  # 10 s and 5 min in the daemon
    await world.outage()
    world.hook.script(ScriptedResponse(delay_s=1.0))
    original, raw = await world.send("database down", "oncall@example.com")
    await world.hook.wait_for_async(1)
    await world.recover()
    (relayed,) = await world.provider.wait_for_async(1, timeout_s=20)
    assert relayed.data == raw
    assert len(await world.copies_of(original)) == 1
