"""Email delivery and the catch-up, from a review of the email side: nothing a person got is left out,
nobody refused for now is dropped.

Real parts on loopback: SQLite in ``tmp_path``, aiosmtpd as the provider's SMTP server and as a
second provider's (a backup email channel). The operator override drives the outage and the recovery.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from daemon.app import Daemon
from tests.acceptance.harness import free_port
from tests.servers import SmtpServer
from tests.support import ApiWorld, config_template, daemon_api, until

TOKEN = "mail-review-api-token-42"
CATCH_UP = "While p was down"
CONFIG = config_template("""\
  backup-mail: {{type: email, smtp: {{host: 127.0.0.1, port: {backup_port}, starttls: false}}}}
directory:
  people:
    ops: {{email: [ops@test.example], backup_email: ops@backup.example}}
    devops: {{email: [devops@test.example], backup_email: devops@backup.example}}
routes:
  - {{name: critical, match: {{severity: [critical]}}, healthy: [email], outage: [backup-mail]}}
  - {{name: rest, match: {{}}, healthy: [email], outage: defer}}
dispatch: {{retry: {{initial: 50ms, max: 200ms, max_attempts: 3}}}}
""")


@dataclass
class World(ApiWorld):
    api: httpx.AsyncClient
    daemon: Daemon
    smtp: SmtpServer
    backup: SmtpServer

    async def delivered(self, nid: str) -> bool:
        return await self.status(nid) == "delivered"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    with SmtpServer() as smtp, SmtpServer() as backup:
        text = CONFIG.format(
            store=tmp_path / "outbox.db", api_port=free_port(), smtp_port=smtp.port, backup_port=backup.port
        )
        async with daemon_api(text, TOKEN, {"TOKEN": TOKEN}) as (daemon, api):
            yield World(api, daemon, smtp, backup)


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _catch_ups(smtp: SmtpServer) -> dict[str, list[EmailMessage]]:
    found: dict[str, list[EmailMessage]] = {}
    for message in (_parse(m.data) for m in smtp.messages):
        if CATCH_UP in str(message["Subject"]):
            found.setdefault(str(message["To"]), []).append(message)
    return found


async def test_a_refused_address_containing_another_leaves_that_one_in_the_catch_up(world: World) -> None:
    """devops@ refused by the backup provider does not strike ops@ (within its address) off the catch-up."""
    world.backup.refuse("devops@backup.example", code=550, text="5.1.1 No such user")
    await world.api.post("/v1/provider/override", json={"state": "outage", "reason": "test"})
    nid = await world.submit("db down", ["ops@test.example", "devops@test.example"])
    await until(lambda: world.delivered(nid))
    [sent] = await world.backup.wait_for_async(1)
    assert sent.rcpt_tos == ("ops@backup.example",)
    await world.api.delete("/v1/provider/override")
    await until(lambda: _catch_ups(world.smtp))
    by_person = _catch_ups(world.smtp)
    assert list(by_person) == ["ops@test.example"]
    [message] = by_person["ops@test.example"]
    assert f"({nid})" in message.get_content()


async def test_a_recipient_refused_for_now_beside_others_gets_the_notification_later(world: World) -> None:
    """A full mailbox (452 4.2.2) beside an accepting one: that recipient gets the notification once
    the mailbox takes it, and the other recipient gets it only once."""
    world.smtp.refuse("devops@test.example", code=452, text="4.2.2 Mailbox full", times=2)
    nid = await world.submit("db down", ["ops@test.example", "devops@test.example"])
    await until(lambda: world.delivered(nid))

    def reached(address: str) -> list[EmailMessage]:
        return [_parse(m.data) for m in world.smtp.messages if address in m.rcpt_tos]

    await until(lambda: reached("devops@test.example"))
    [late] = reached("devops@test.example")
    [first] = reached("ops@test.example")
    assert late["Subject"] == first["Subject"] == "[CRITICAL] db down"
    assert world.smtp.rcpt_attempts.snapshot().count("devops@test.example") == 3
